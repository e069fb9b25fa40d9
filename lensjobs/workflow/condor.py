"""Talking to the schedd: submit a run's DAG through the htcondor2 bindings (condor_submit_dag
when the bindings cannot, e.g. a wheel newer than the access point's HTCondor), and ask
whether its DAGMan job is still queued."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from lensjobs.workflow.run import Run, RunError

# A DAGMan job counts as gone only once it has completed (4). A removed one (3, "X") stays
# in the queue while DAGMan removes its nodes and runs the FINAL node: a second DAGMan
# started on the same directory then would fight it over the rescue DAG.
_COMPLETED = 4


class ScheddError(RunError):
    """The schedd cannot be reached or refused a request."""


def batch_name(run: Run) -> str:
    return f"lensjobs:{run.name}"


@contextmanager
def _inside(path: Path):
    # The bindings write lensjobs.dag.condor.sub and resolve the DAG's relative paths from
    # the working directory, as condor_submit_dag run in the run directory would.
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def submit_dag(run: Run) -> int:
    """Submit (or, with a rescue DAG present, resume) the run's DAG; returns the cluster id."""
    try:
        return submit_with_bindings(run)
    except ScheddError as error:
        if shutil.which("condor_submit_dag") is None:
            raise
        try:
            return submit_with_tools(run)
        except ScheddError as second:
            raise ScheddError(f"{error}; {second}") from None


def submit_with_bindings(run: Run) -> int:
    try:
        import htcondor2
    except ImportError as error:
        raise ScheddError(f"the htcondor2 bindings do not load ({error})") from None
    options = {"BatchName": batch_name(run), "Force": False, "AutoRescue": 1}
    try:
        with _inside(run.dir):
            description = htcondor2.Submit.from_dag(run.DAG, options)
            return htcondor2.Schedd().submit(description).cluster()
    except (htcondor2.HTCondorException, OSError, RuntimeError) as error:
        raise ScheddError(f"submitting {run.dag} failed: {_one_line(error)}") from None


def submit_with_tools(run: Run) -> int:
    """condor_submit_dag in the run directory, as a user would type it."""
    command = [
        "condor_submit_dag", "-batch-name", batch_name(run), "-autorescue", "1",
        "-update_submit", run.DAG,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=run.dir, capture_output=True, text=True)
    cluster = re.search(r"submitted to cluster (\d+)", done.stdout)
    if done.returncode or not cluster:
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise ScheddError(f"condor_submit_dag failed (exit {done.returncode}): {said}")
    return int(cluster[1])


def dag_queued(cluster: int) -> bool | None:
    """Whether the DAGMan job is still in the queue, in any state but completed (removed
    included); None when the schedd cannot be asked."""
    import htcondor2

    try:
        ads = htcondor2.Schedd().query(
            constraint=f"ClusterId == {int(cluster)}", projection=["JobStatus"]
        )
    except (htcondor2.HTCondorException, OSError, RuntimeError):
        return None
    return any(ad.get("JobStatus") != _COMPLETED for ad in ads)


def still_queued(run: Run) -> bool:
    """Whether the run's last submission is still queued or running: its DAGMan job in the
    schedd (DAGMan's lock file when the schedd cannot say), or a live --local executor."""
    from lensjobs.workflow.local import running_here

    submissions = run.read_info()["submissions"]
    last = submissions[-1] if submissions else {}
    if last.get("executor") != "condor":
        return running_here(run)
    queued = dag_queued(last["cluster"])
    if queued is None:  # DAGMan holds its lock file while it runs
        return (run.dir / f"{run.DAG}.lock").exists()
    return queued


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
