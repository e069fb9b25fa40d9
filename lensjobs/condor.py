"""Talking to the schedd through the htcondor2 bindings: submit a run's DAG, and ask whether
its DAGMan job is still queued."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from lensjobs.run import Run, RunError

# DAGMan job states that mean "still in the queue" (idle, running, held, ...): not 3
# (removed) or 4 (completed).
_GONE = (3, 4)


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
    import htcondor2

    options = {"BatchName": batch_name(run), "Force": False, "AutoRescue": 1}
    try:
        with _inside(run.dir):
            description = htcondor2.Submit.from_dag(run.DAG, options)
            return htcondor2.Schedd().submit(description).cluster()
    except (htcondor2.HTCondorException, OSError, RuntimeError) as error:
        raise ScheddError(f"submitting {run.dag} failed: {_one_line(error)}") from None


def dag_queued(cluster: int) -> bool | None:
    """Whether the DAGMan job is still in the queue; None when the schedd cannot be asked."""
    import htcondor2

    try:
        ads = htcondor2.Schedd().query(
            constraint=f"ClusterId == {int(cluster)}", projection=["JobStatus"]
        )
    except (htcondor2.HTCondorException, OSError, RuntimeError):
        return None
    return any(ad.get("JobStatus") not in _GONE for ad in ads)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
