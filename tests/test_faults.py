"""Faults are not bad input: what a retry can mend exits with a fault's code (1), which
DAGMan retries, never with 2 (bad input, never retried). Injected for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


@pytest.fixture(scope="module")
def priors(sim_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("infer")
    infer = run_cli("node", "infer", sim_file, "--out", out)
    assert infer.returncode == 0, infer.stderr
    return out / "priors.fits"


def assert_out_of_space(result: subprocess.CompletedProcess[str], where: Path) -> None:
    """Exit 1 (DAGMan retries it) and one line naming where, without a traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {where}: ")
    assert "space" in line and line.endswith("; a fault, not bad input")


def test_a_full_disk_during_the_split_is_a_fault(
    sim_file: Path, priors: Path, full_disk: Path
) -> None:
    result = run_cli("node", "split", sim_file, priors, "--out", full_disk / "nodes")
    assert_out_of_space(result, full_disk / "nodes")


def test_a_full_disk_under_a_fit_is_a_fault(
    sim_file: Path, priors: Path, tmp_path: Path, full_disk: Path
) -> None:
    """Out of space while writing a fit's outputs: exit 1 (retried), never FAILED."""
    assert run_cli("node", "split", sim_file, priors, "--out", tmp_path / "nodes").returncode == 0
    lens = sorted((tmp_path / "nodes").glob("*/input.fits"))[0]
    result = run_cli("node", "fit", lens, "--out", full_disk / "out", "--preset", "quick")
    assert_out_of_space(result, full_disk / "out")


@pytest.mark.parametrize("keep", [0.5, 0.995])
def test_a_truncated_priors_file_is_a_fault_found_before_writing(
    sim_file: Path, priors: Path, tmp_path: Path, keep: float
) -> None:
    """priors.fits is written atomically by the infer node, so a short one was damaged on
    the way: exit 1 makes DAGMan run that node again; no fit input is written from it."""
    whole = priors.read_bytes()
    short = tmp_path / "short.fits"
    short.write_bytes(whole[: int(len(whole) * keep)])
    result = run_cli("node", "split", sim_file, short, "--out", tmp_path / "nodes")
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: {short}: truncated or damaged (")
    assert line.endswith("; a fault, not bad input")
    assert not (tmp_path / "nodes").exists()


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


def test_a_killed_local_run_is_shown_stopped_and_resubmit_goes_on(
    sim_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The --local executor and its node processes killed mid-run (as when a login session
    dies): status says no one runs the DAG (never "running"), --watch ends, and resubmit
    finishes it without fitting again what had finished."""
    monkeypatch.setenv("LENSJOBS_TESTING", "1")  # the trivial preset: fits that cost nothing
    runs, run = tmp_path / "runs", tmp_path / "runs" / "killed"
    executor = subprocess.Popen(
        [
            sys.executable, "-m", "lensjobs", "submit", sim_file, "--runs-dir", runs,
            "--name", "killed", "--local", "--shared-fs", "-j", "1", "--preset", "trivial",
            "--fits-per-job", "4",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(run.glob("results/*.tar.gz")):
        assert executor.poll() is None and time.monotonic() < deadline, "no fit finished"
        time.sleep(0.2)
    os.killpg(executor.pid, signal.SIGKILL)
    executor.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in run.glob("results/*.tar.gz")}
    assert 0 < len(finished) < 24

    for args in (("status", run), ("status", run, "--watch", "--every", "1")):
        shown = run_cli(*args)
        assert shown.returncode == 0, shown.stderr
        assert "killed: DAG stopped; nodes:" in shown.stdout
        assert f"go on with: lensjobs resubmit {run}" in shown.stdout

    resumed = run_cli("resubmit", run)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "DAG succeeded" in resumed.stdout
    assert len(list(run.glob("results/*.tar.gz"))) == 24
    assert {n: (run / "results" / n).stat().st_mtime_ns for n in finished} == finished
