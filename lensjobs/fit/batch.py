"""A batch of fits in one job: the candidates' inputs ``IN/<ID>.fits`` fitted one after
another into ``OUT/<ID>/``, in one process (imports and set-up paid once per job).

The job self-checkpoints: once ``checkpoint_every`` seconds have passed it stops, inside a
fit (the sampler's state goes to ``OUT/<ID>/checkpoint.npz``) or between fits, and returns
85. ``OUT`` is the job's checkpoint (HTCondor's ``transfer_checkpoint_files``), so a job
restarted, here or on another machine after an eviction, goes on where it stopped: a
candidate whose ``OUT/<ID>/<ID>.tar.gz`` exists is finished and never fitted again.

A candidate that cannot be fitted (NO_ARCS, bad pixels or priors, an unreadable input) is
recorded in its ``params.json`` and the batch goes on: the job returns 0. Only a fault
(an exception: memory, I/O, a bug) ends the job with another code, and the job is retried.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from lensjobs.fit.inputs import FitInputError
from lensjobs.fit.node import EXIT_CHECKPOINT, EXIT_DONE, no_fit, run_fit
from lensjobs.ids import SAFE_ID


def finished(out: Path, cid: str) -> bool:
    """A fit's tarball is written last, atomically: it marks a finished candidate."""
    return (out / cid / f"{cid}.tar.gz").exists()


def batch_inputs(inputs: Path) -> list[Path]:
    paths = sorted(inputs.glob("*.fits"))
    for path in paths:
        if not SAFE_ID.fullmatch(path.name.removesuffix(".fits")):
            raise FitInputError(f"{path}: not a candidate ID; inputs are named <ID>.fits")
    return paths


def run_batch(
    inputs: Path,
    out: Path,
    preset: str,
    checkpoint_every: float | None = None,
    said: Callable[[str, int], None] | None = None,
) -> int:
    """Fit every input not finished yet; returns 0 when all are, 85 at a checkpoint.
    ``said(cid, code)`` hears of each candidate fitted now."""
    deadline = time.time() + checkpoint_every if checkpoint_every else math.inf
    for path in batch_inputs(inputs):
        cid = path.name.removesuffix(".fits")
        if finished(out, cid):
            continue
        if time.time() >= deadline:  # between fits
            return EXIT_CHECKPOINT
        try:
            code = run_fit(path, out / cid, preset, deadline=deadline, expected_id=cid)
        except FitInputError as error:
            code = no_fit(out / cid, cid, preset, "FAILED", str(error))
        if code == EXIT_CHECKPOINT:
            return code
        if said:
            said(cid, code)
    return EXIT_DONE
