"""Where a run stands, from its files alone (so it works when the schedd cannot be reached):
DAGMan's node status file (or the local executor's, same format), the DAG's node event log
for exit codes and hold reasons, each failed node's stderr, and per candidate the batches'
ids.txt and outcomes.tsv."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lensjobs.workflow.batches import (
    Outcome,
    batch_number,
    candidate_batches,
    read_outcomes,
)
from lensjobs.workflow.condor import still_queued
from lensjobs.workflow.read import NodeState, read_dag, read_status_file, read_submit
from lensjobs.workflow.run import Run

STATES = ("done", "running", "idle", "held", "failed", "removed", "futile", "waiting")
STDERR_LINES = 3


@dataclass
class Problem:
    node: str
    state: str
    reason: str
    stderr: list[str] = field(default_factory=list)


@dataclass
class RunStatus:
    dag: str  # not submitted | starting | running | succeeded | failed | stopped
    counts: Counter[str]  # nodes by state
    candidates: int  # candidates with a fit (skipped ones aside)
    skipped: int  # unusable cutouts: no fit
    by_flag: Counter[str]  # finished candidates by flag
    running: dict[str, int]  # running fit node -> its candidates not finished yet
    failed: list[Outcome]  # the first max_problems candidates that ended FAILED
    failed_count: int  # all of them
    eta_seconds: float | None
    updated: float | None
    problems: list[Problem]  # the first max_problems failed, removed or held nodes, with why
    problem_count: int  # all of them

    @property
    def finished_candidates(self) -> int:
        return sum(self.by_flag.values())

    @property
    def finished(self) -> bool:
        return self.dag in ("succeeded", "failed", "stopped")


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
    info = run.read_info()
    dag_ad, node_ads = read_status_file(run.status_file)
    if not _current(info, dag_ad):  # an earlier submission's: says nothing about this one
        dag_ad, node_ads = {}, []
    dag = _dag_state(run, info, dag_ad)
    states = {ad["Node"]: _state(ad) for ad in node_ads}
    events = job_events(run.nodes_log) if {"failed", "held"} & set(states.values()) else {}
    for name, state in states.items():  # DAGMan calls a removed job's node failed
        if state == "failed" and events.get(name, "").startswith("removed: "):
            states[name] = "removed"
    counts = Counter(states.values())
    batches = candidate_batches(run.dir)
    outcomes = read_outcomes(run.dir)
    left = Counter(k for cid, k in batches.items() if cid not in outcomes)
    running = {
        node: left[k]
        for node, state in states.items()
        if state == "running" and (k := batch_number(node)) is not None and left[k]
    }
    problems = []
    bad = [ad for ad in node_ads if states[ad["Node"]] in ("failed", "removed", "held")]
    if bad[:max_problems]:
        nodes = read_dag(run.dag).nodes
        for ad in bad[:max_problems]:
            name = ad["Node"]
            node = nodes[name]
            reason = events.get(name) or ad.get("StatusDetails") or "no reason recorded"
            tail = stderr_tail(run, name, node.vars, node.submit)
            problems.append(Problem(name, states[name], reason, tail))
    failed = [o for o in outcomes.values() if o.flag == "FAILED"]
    return RunStatus(
        dag=dag,
        counts=counts,
        candidates=len(batches),
        skipped=len(info.get("skipped") or {}),
        by_flag=Counter(o.flag for o in outcomes.values()),
        running=running,
        failed=failed[:max_problems],
        failed_count=len(failed),
        eta_seconds=_eta(run, info, outcomes, len(batches)) if dag == "running" else None,
        updated=dag_ad.get("Timestamp"),
        problems=problems,
        problem_count=len(bad),
    )


def _current(info: dict, dag_ad: dict) -> bool:
    """Whether the node status file was written for the last submission: the previous one's
    stays until the new DAGMan writes its own."""
    submissions = info["submissions"]
    if not submissions or not dag_ad:
        return False
    submitted = datetime.fromisoformat(submissions[-1]["time"]).timestamp()
    return dag_ad.get("Timestamp", 0) >= int(submitted)


def _dag_state(run: Run, info: dict, dag_ad: dict) -> str:
    """What the last submission's DAG is doing, from its own status file (``dag_ad``, empty
    until written) and whether a DAGMan still runs it: one that was removed or died leaves
    "running" in its file for good."""
    if not info["submissions"]:
        return "not submitted"
    state = NodeState(dag_ad.get("DagStatus", NodeState.SUBMITTED))
    if dag_ad and state == NodeState.DONE:
        return "succeeded"
    if dag_ad and state == NodeState.ERROR:
        return "failed"
    if still_queued(run):
        return "running" if dag_ad else "starting"
    return "stopped"


def _eta(run: Run, info: dict, outcomes: dict[str, Outcome], total: int) -> float | None:
    """Candidates left at the rate they have finished since this submission's fits began
    (its start, or the priors' writing if later): a resubmission starts its own clock."""
    submissions = info["submissions"]
    if not submissions or not run.priors.exists():
        return None
    submitted = datetime.fromisoformat(submissions[-1]["time"]).timestamp()
    start = max(submitted, run.priors.stat().st_mtime)
    recent = sum(o.finished >= start for o in outcomes.values())
    remaining = total - len(outcomes)
    if not recent or not remaining:
        return None
    return remaining * (time.time() - start) / recent
