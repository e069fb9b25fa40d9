"""Starting a written run, and preparing a resubmission: what ``lensjobs submit`` and
``lensjobs resubmit`` do once the CLI has parsed their arguments.

A resubmission never reruns a finished candidate: failed fit nodes run again from DAGMan's
rescue DAG, and each one's PRE script stages only its candidates without a result. With
``--nodes ID,...`` the chosen candidates lose their result first and their batches are
taken out of the rescue DAG's DONE list, so those candidates (and only they) are fitted
again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lensjobs.workflow.batches import batch_node, candidate_batches, forget
from lensjobs.workflow.condor import still_queued, submit_dag
from lensjobs.workflow.local import LocalDag
from lensjobs.workflow.read import Dag, dag_succeeded
from lensjobs.workflow.run import Run, RunError, RunSettings, now
from lensjobs.workflow.write import render_submit_files, rerun_nodes


@dataclass(frozen=True)
class Started:
    executor: str
    cluster: int | None = None  # the DAGMan job's, on a pool
    succeeded: bool | None = None  # --local runs to the end


def start(run: Run, jobs: int = 2, report: Callable[[Dag], None] | None = None) -> Started:
    """Submit the run's DAG to the schedd, or run it here (--local) with ``jobs`` nodes at
    once; recorded in run.json's submissions."""
    info = run.read_info()
    executor = info["executor"]
    if executor == "local":
        info["submissions"].append({"time": now(), "executor": "local"})
        run.write_info(info)
        return Started(executor, succeeded=LocalDag(run, jobs, report).execute())
    cluster = submit_dag(run)
    info["submissions"].append({"time": now(), "executor": "condor", "cluster": cluster})
    run.write_info(info)
    return Started(executor, cluster=cluster)


def prepare_resubmit(run: Run, ids: list[str], settings: RunSettings | None) -> int:
    """Make the run ready to go on: new settings (for the nodes that will run), the chosen
    candidates made unfinished. Returns how many fit nodes are forced to run again."""
    if still_queued(run):
        raise RunError(
            f"{run.dir}: its DAG is still queued or running; wait for it "
            f"(lensjobs status {run.dir}) or remove it with condor_rm first"
        )
    batches = candidate_batches(run.dir) if ids else {}
    for cid in ids:
        if cid not in batches:
            raise RunError(
                f"--nodes {cid[:40]!r}: not a fitted candidate of {run.dir}; give candidate "
                "IDs as the catalogue has them"
            )
    if not ids and dag_succeeded(run):
        raise RunError(
            f"{run.dir}: nothing to resubmit (the DAG succeeded: every node finished); "
            "use --nodes ID,... to fit chosen candidates again"
        )
    if not ids and not run.rescue_dags():  # a killed --local executor, a DAGMan that died
        rerun_nodes(run, set(), "the DAG stopped without writing a rescue DAG")
    if settings is not None:
        info = run.read_info()
        # Finished candidates do not run again, so new settings reach only those that will.
        render_submit_files(run.dir, run.dir, settings, info)
        info["settings"] = settings.model_dump()
        run.write_info(info)
    if not ids:
        return 0
    forget(run.dir, ids, batches)
    nodes = {batch_node(batches[cid]) for cid in ids}
    rerun_nodes(run, nodes, f"--nodes: {len(ids)} candidate(s) in {len(nodes)} fit node(s)")
    return len(nodes)
