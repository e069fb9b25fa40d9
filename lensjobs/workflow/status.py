"""Where a run stands, from its files alone (so it works when the schedd cannot be reached):
DAGMan's node status file (or the local executor's, same format), the DAG's node event log
for exit codes and hold reasons, and each failed node's stderr."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lensjobs.workflow.read import NodeState, node_id, read_dag, read_status_file, read_submit
from lensjobs.workflow.run import Run

STATES = ("done", "running", "idle", "held", "failed", "futile", "waiting")
STDERR_LINES = 3


@dataclass
class Problem:
    node: str
    state: str
    reason: str
    stderr: list[str] = field(default_factory=list)


@dataclass
class RunStatus:
    dag: str  # not started | running | succeeded | failed
    counts: Counter[str]
    fits_total: int
    fits_finished: int
    eta_seconds: float | None
    updated: float | None
    problems: list[Problem]  # the first max_problems failed or held nodes, with reasons
    problem_count: int  # all of them

    @property
    def finished(self) -> bool:
        return self.dag in ("succeeded", "failed")


def _state(ad: dict) -> str:
    status = NodeState(ad.get("NodeStatus", 0))
    if status == NodeState.DONE:
        return "done"
    if status == NodeState.ERROR:
        return "failed"
    if status == NodeState.FUTILE:
        return "futile"
    if ad.get("JobProcsHeld", 0):
        return "held"
    if status == NodeState.SUBMITTED:
        return "idle" if ad.get("StatusDetails") == "idle" else "running"
    if status == NodeState.POSTRUN:
        return "running"
    return "waiting"


def job_events(log: Path) -> dict[str, str]:
    """The latest exit code, hold or removal reason per node, from the DAG's node log."""
    import htcondor2

    if not log.exists():
        return {}
    node_of: dict[int, str] = {}
    said: dict[str, str] = {}
    kind = htcondor2.JobEventType
    for event in htcondor2.JobEventLog(str(log)).events(stop_after=0):
        notes = event.get("LogNotes", "") if event.type == kind.SUBMIT else ""
        if notes.startswith("DAG Node: "):
            node_of[event.cluster] = notes.removeprefix("DAG Node: ")
        node = event.get("DAGNodeName") or node_of.get(event.cluster)
        if node is None:
            continue
        if event.type == kind.JOB_TERMINATED:
            said[node] = f"exit code {event.get('ReturnValue', '?')}"
        elif event.type == kind.JOB_HELD:
            said[node] = f"held: {event.get('HoldReason', '?')}"
        elif event.type == kind.JOB_ABORTED:
            said[node] = f"removed: {event.get('Reason', '?')}"
        elif event.type == kind.JOB_RELEASED:
            said.pop(node, None)
        elif event.type == kind.POST_SCRIPT_TERMINATED and event.get("ReturnValue", 0):
            said[node] = f"POST script exit code {event['ReturnValue']}"
    return said


def stderr_tail(run: Run, node: str, vars_: dict[str, str], submit: str) -> list[str]:
    description = read_submit(run.dir / submit, vars_)
    if "error" not in description:
        return []
    path = run.dir / description.get("initialdir", ".") / description["error"]
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-STDERR_LINES:]


def read_status(run: Run, max_problems: int = 20) -> RunStatus:
    dag_ad, node_ads = read_status_file(run.status_file)
    states = {ad["Node"]: _state(ad) for ad in node_ads}
    counts = Counter(states.values())
    fit_states = [s for node, s in states.items() if node_id(node)]
    fits_finished = sum(s in ("done", "failed", "futile") for s in fit_states)
    if not dag_ad:
        dag = "not started"
    elif NodeState(dag_ad.get("DagStatus", 3)) == NodeState.DONE:
        dag = "succeeded"
    elif NodeState(dag_ad.get("DagStatus", 3)) == NodeState.ERROR:
        dag = "failed"
    else:
        dag = "running"
    problems = []
    bad = [ad for ad in node_ads if states[ad["Node"]] in ("failed", "held")]
    if bad[:max_problems]:
        events = job_events(run.nodes_log)
        nodes = read_dag(run.dag).nodes
        for ad in bad[:max_problems]:
            name = ad["Node"]
            node = nodes[name]
            reason = events.get(name) or ad.get("StatusDetails") or "no reason recorded"
            tail = stderr_tail(run, name, node.vars, node.submit)
            problems.append(Problem(name, states[name], reason, tail))
    return RunStatus(
        dag=dag,
        counts=counts,
        fits_total=len(fit_states),
        fits_finished=fits_finished,
        eta_seconds=_eta(run, fit_states, sum(s == "done" for s in fit_states)),
        updated=dag_ad.get("Timestamp"),
        problems=problems,
        problem_count=len(bad),
    )


def _eta(run: Run, fit_states: list[str], done: int) -> float | None:
    """Remaining fits at the rate fits have finished since the priors were written."""
    remaining = sum(s not in ("done", "failed", "futile") for s in fit_states)
    if not done or not remaining or not run.priors.exists():
        return None
    elapsed = time.time() - run.priors.stat().st_mtime
    return remaining * elapsed / done
