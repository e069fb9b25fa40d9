"""Reading a run's DAG back: the subset of the DAG and submit languages that
``lensjobs.workflow.write`` writes, DAGMan's node status file and rescue DAGs, for the local
executor, ``lensjobs status``, ``resubmit`` and ``pull``."""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from lensjobs.workflow.run import Run, RunError

_MACRO = re.compile(r"\$\((\w+)\)")


class NodeState(IntEnum):
    """DAGMan's node status numbers, as they appear in the node status file (its
    DagStatus uses them too: 3 running, 5 succeeded, 6 failed)."""

    NOT_READY = 0
    READY = 1
    SUBMITTED = 3
    POSTRUN = 4
    DONE = 5
    ERROR = 6
    FUTILE = 7


@dataclass
class Node:
    name: str
    submit: str
    vars: dict[str, str] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)
    retry: int = 0
    unless_exit: int | None = None
    pre: list[str] = field(default_factory=list)
    pre_skip: int | None = None
    post: list[str] = field(default_factory=list)
    category: str | None = None
    final: bool = False
    state: NodeState = NodeState.NOT_READY
    details: str = ""
    retries: int = 0


@dataclass
class Dag:
    nodes: dict[str, Node]
    maxjobs: dict[str, int]


def read_dag(path: Path) -> Dag:
    nodes: dict[str, Node] = {}
    maxjobs: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if raw.lstrip().startswith("#"):
            continue
        # shlex only where quotes need it (VARS): it is slow on 100,000-node DAGs.
        words = shlex.split(raw) if '"' in raw else raw.split()
        if not words:
            continue
        keyword, args = words[0].upper(), words[1:]
        if keyword in ("JOB", "FINAL"):
            nodes[args[0]] = Node(args[0], args[1], final=keyword == "FINAL")
        elif keyword == "VARS":
            nodes[args[0]].vars.update(a.split("=", 1) for a in args[1:])
        elif keyword == "RETRY":
            nodes[args[0]].retry = int(args[1])
            if len(args) > 3 and args[2].upper() == "UNLESS-EXIT":
                nodes[args[0]].unless_exit = int(args[3])
        elif keyword == "SCRIPT" and args[0].upper() == "POST":
            nodes[args[1]].post = args[2:]
        elif keyword == "SCRIPT" and args[0].upper() == "PRE":
            nodes[args[1]].pre = args[2:]
        elif keyword == "PRE_SKIP":
            nodes[args[0]].pre_skip = int(args[1])
        elif keyword == "CATEGORY":
            nodes[args[0]].category = args[1]
        elif keyword == "MAXJOBS":
            maxjobs[args[0]] = int(args[1])
        elif keyword == "PARENT":
            split = [w.upper() for w in args].index("CHILD")
            for child in args[split + 1 :]:
                nodes[child].parents.extend(args[:split])
        elif keyword not in ("CONFIG", "NODE_STATUS_FILE"):
            raise RunError(f"{path}:{number}: '{keyword}' is not something --local runs")
    return Dag(nodes, maxjobs)


def done_in_rescue(run: Run) -> set[str]:
    """Nodes the latest rescue DAG marks DONE (DAGMan's own rule for a resubmitted DAG)."""
    rescues = run.rescue_dags()
    if not rescues:
        return set()
    lines = rescues[-1].read_text().splitlines()
    return {line.split()[1] for line in lines if line.startswith("DONE ")}


def read_submit(path: Path, macros: dict[str, str]) -> dict[str, str]:
    """key = value lines of a submit file, $(MACRO)s expanded from the node's VARS."""

    def macro(match: re.Match[str]) -> str:
        return macros.get(match[1], match[0])

    lines = _submit_lines(path, path.stat().st_mtime_ns)
    return {key: _MACRO.sub(macro, value) for key, value in lines.items()}


@functools.cache
def _submit_lines(path: Path, mtime_ns: int) -> dict[str, str]:
    # Cached per version of the file: every fit node shares fit.sub, and status may look up
    # thousands of nodes.
    description = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        description[key.lower()] = value
    return description


def dag_succeeded(run: Run) -> bool:
    """Whether the DAG's last run ended well (DagStatus DONE in the node status file)."""
    dag, _ = read_status_file(run.status_file)
    return dag.get("DagStatus") == NodeState.DONE


def done_nodes(run: Run) -> set[str]:
    """Nodes that finished: every DONE node of a DAG that succeeded, else the latest rescue
    DAG's DONE list (what DAGMan itself would skip)."""
    dag, ads = read_status_file(run.status_file)  # 18 MB at 100,000 nodes: read it once
    if dag.get("DagStatus") == NodeState.DONE or not run.rescue_dags():
        return {ad["Node"] for ad in ads if ad.get("NodeStatus") == NodeState.DONE}
    return done_in_rescue(run)


_FIELD = re.compile(r"^\s*(\w+) = (.*?);(?:\s*/\*.*\*/)?\s*$")


def _value(text: str) -> int | str:
    if text.startswith('"'):
        try:
            return json.loads(text)  # ClassAd strings escape like JSON's
        except ValueError:
            return text.strip('"')
    try:
        return int(text)
    except ValueError:
        return text


def parse_status(text: str) -> list[dict]:
    """The ads of a node status file, as DAGMan writes them: '[', 'Name = value;' lines,
    ']' (its one list, DagFiles, is left out). A line parser, not a ClassAd one: the file
    of a 100,000-node DAG is 18 MB, which classad2.parseAds takes 9 s to read."""
    ads: list[dict] = []
    ad: dict | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "[":
            ad = {}
        elif stripped == "]" and ad is not None:
            ads.append(ad)
            ad = None
        elif ad is not None and (field := _FIELD.match(line)):
            ad[field[1]] = _value(field[2])
    return ads


def read_status_file(path: Path) -> tuple[dict, list[dict]]:
    """The DagStatus ad and the NodeStatus ads; empty when the file does not exist yet."""
    try:
        ads = parse_status(path.read_text())
    except FileNotFoundError:
        return {}, []
    dag = next((ad for ad in ads if ad.get("Type") == "DagStatus"), {})
    return dag, [ad for ad in ads if ad.get("Type") == "NodeStatus"]
