"""Faults are not bad input: what a retry can mend exits with a fault's code (1), which
DAGMan retries, never with 2 (bad input, never retried). Injected for real."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from lensjobs.workflow.local import acquire_lock
from lensjobs.workflow.run import Run, RunError

ROOT = os.geteuid() == 0


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 kB filesystem: a full disk after a few files."""
    if not ROOT:
        pytest.skip("mounting a small tmpfs needs root (make test runs as root in CI)")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", mount], check=True)


def test_a_full_disk_during_the_split_is_a_fault(
    sim_file: Path, tmp_path: Path, full_disk: Path
) -> None:
    infer = run_cli("node", "infer", sim_file, "--out", tmp_path / "infer")
    assert infer.returncode == 0, infer.stderr
    priors = tmp_path / "infer" / "priors.fits"
    result = run_cli("node", "split", sim_file, priors, "--out", full_disk / "nodes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {full_disk / 'nodes'}: ")
    assert "space" in line and line.endswith("; a fault, not bad input")


def test_one_local_executor_per_run(tmp_path: Path) -> None:
    """The --local executor's lock is taken exclusively: a second one is refused while the
    first lives, and a lock left by a dead process is taken over."""
    run = Run(tmp_path)
    lock = acquire_lock(run)
    assert lock.read_text() == f"{os.getpid()}\n"
    with pytest.raises(
        RunError, match=rf"another lensjobs runs this DAG here \(pid {os.getpid()}\)"
    ):
        acquire_lock(run)
    lock.write_text("999999999\n")  # no such process
    assert acquire_lock(run).read_text() == f"{os.getpid()}\n"
