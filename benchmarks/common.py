"""Shared by the benchmark scripts: run the real ``lensjobs`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def lensjobs(
    *args: str | Path, check: bool = True, quiet: bool = True
) -> subprocess.CompletedProcess:
    """``lensjobs ARGS`` with this interpreter; raises on failure when ``check``."""
    return subprocess.run(
        [sys.executable, "-m", "lensjobs", *map(str, args)],
        check=check,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE,
        text=True,
    )


def theta_figures(relative_errors: list[float]) -> dict[str, float]:
    """Issue 12's theta_E accuracy of fits with these |dtheta_E| / theta_E: the median, the
    share within 10 % and the share beyond 20 % (catastrophic)."""
    rel = np.abs(np.asarray(relative_errors, dtype=float))
    return {
        "median": float(np.median(rel)),
        "within10": float(np.mean(rel <= 0.10)),
        "beyond20": float(np.mean(rel > 0.20)),
    }
