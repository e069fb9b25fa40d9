"""Shared by the benchmark scripts: run the real ``lensjobs`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
