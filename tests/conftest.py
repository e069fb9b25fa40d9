from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lensjobs.simulate import simulate_catalog


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real ``lensjobs`` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "lensjobs", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def notebook_layout(path: Path, images: np.ndarray, table: Table) -> Path:
    """The original notebooks' files: images in HDU 1, table in HDU 2, no names."""
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(images), fits.BinTableHDU(table)]).writeto(path)
    return path


def noise_cube(n: int, bands: int = 4, size: int = 45, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, bands, size, size)).astype(np.float32)


@pytest.fixture(scope="session")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated catalogue shared by the tests that only read it."""
    return simulate_catalog(tmp_path_factory.mktemp("sim") / "sim.fits", 24, seed=7, workers=2)
