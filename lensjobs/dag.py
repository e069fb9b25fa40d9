"""Write a run: validate the catalogue, then render ``submit/`` and ``jobs/`` into a new run
directory and write ``lensjobs.dag``. Orchestration only: the science is in the node
commands the DAG runs (``lensjobs node infer|split|fit|aggregate``)."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from lensjobs.catalog import CatalogError, open_catalog
from lensjobs.files import sha256_of
from lensjobs.fit.presets import PRESETS
from lensjobs.images import Image
from lensjobs.run import Run, RunError, RunSettings, now, versions

PROJECT = Path(__file__).resolve().parents[1]
TEMPLATES = PROJECT / "submit"
WRAPPERS = PROJECT / "jobs"
SUBMIT_FILES = ("infer.sub", "fit.sub", "aggregate.sub", "dagman.config")
STATUS_EVERY_S = 30
_TOKEN = re.compile(r"{{(\w+)}}")
_MACRO = re.compile(r"\$\((\w+)\)")


def fit_node(cid: str) -> str:
    return f"fit_{cid}"


def node_id(node: str) -> str | None:
    """The candidate ID of a fit node's name; None for infer and aggregate."""
    return node.removeprefix("fit_") if node.startswith("fit_") else None


@dataclass(frozen=True)
class Candidates:
    """What validation found: the IDs that get a fit node, and the skipped ones with why."""

    n: int
    fit_ids: list[str]
    skipped: dict[str, str]


def validate_candidates(path: Path, progress: Callable[[int], None] | None = None) -> Candidates:
    with open_catalog(path) as catalog:
        skipped = {p.id: p.reason for p in catalog.scan(progress=progress)}
        fit_ids = [cid for cid in catalog.ids if cid not in skipped]
        if not fit_ids:
            raise CatalogError(f"{path}: no usable cutout; nothing to fit")
        return Candidates(catalog.n, fit_ids, skipped)


def render(text: str, values: dict[str, str], where: str) -> str:
    """Fill ``{{name}}`` tokens; every token must have a value."""

    def fill(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise KeyError(f"{where}: no value for {{{{{match[1]}}}}}")
        return values[match[1]]

    return _TOKEN.sub(fill, text)


def _environment(python: str, shared: bool) -> str:
    # From an image, the image's python3 has lensjobs; on a shared filesystem the submitter's.
    return f"LENSJOBS_PYTHON={python}" if shared else ""


# OSPool job duration categories: "Medium" jobs are expected to end within 10 h (held at
# 20 h), "Long" ones within 20 h; checkpointing restarts the clock (../shared/OSPOOL.md).
MEDIUM_HOURS = 10
# Infer: image start-up and reading the catalogue, then the networks' measured CPU rate
# (BENCHMARKS.md: 238-256 candidates/s on 2 cores); a GPU is faster.
INFER_START_S = 120
INFER_PER_S = 200


def duration_category(seconds: float) -> str:
    return "Medium" if seconds < MEDIUM_HOURS * 3600 else "Long"


def _container(image: Image | None) -> str:
    return f"container_image           = {image.container_image}" if image else ""


def _with_image(megabytes: int, image: Image | None) -> str:
    # A transferred image lands in the job's sandbox; docker:// images are converted into
    # the execute node's own cache, whose size we cannot know here.
    return f"{megabytes + ((image.megabytes or 0) if image else 0)}MB"


def input_name(info: dict) -> str:
    """The catalogue's file name as the infer job receives it."""
    return info["input"].get("osdf", "candidates.fits").rsplit("/", 1)[-1]


def template_values(
    run_dir: Path, settings: RunSettings, info: dict, images: dict[str, Image] | None
) -> dict[str, str]:
    """Every ``{{token}}`` of the submit templates, from run.json's contents."""
    n = info["input"]["candidates"]
    fit, infer = (images["fit"], images["infer"]) if images else (None, None)
    gpu_lines = []
    if settings.infer_gpu_memory:
        gpu_lines.append(f"gpus_minimum_memory       = {settings.infer_gpu_memory}")
    if settings.infer_gpu_capability:
        gpu_lines.append(f"gpus_minimum_capability   = {settings.infer_gpu_capability:g}")
    fit_seconds = PRESETS[settings.preset].median_cpu_seconds
    project = f'+ProjectName              = "{settings.project}"' if settings.project else ""
    # The catalogue, priors.fits (int16 maps: ~17 kB per candidate) and room to spare.
    infer_disk = (2 * info["input"]["bytes"] + n * 17_000) // 1_000_000 + 1000
    return {
        "run": str(run_dir),
        "preset": settings.preset,
        "checkpoint_every": str(settings.checkpoint_every),
        "fit_memory": f"{settings.fit_memory}MB",
        "fit_disk": _with_image(settings.fit_disk, fit),
        "infer_gpus": str(settings.infer_gpus),
        "infer_gpu_requirements": "\n".join(gpu_lines),
        "infer_cpus": str(settings.infer_cpus),
        "infer_memory": f"{settings.infer_memory}MB",
        "infer_disk": _with_image(infer_disk, infer),
        "candidates": info["input"].get("osdf", f"{run_dir}/candidates.fits"),
        "candidates_name": input_name(info),
        "environment": _environment(sys.executable, settings.shared_fs),
        "ap_environment": _environment(sys.executable, True),
        "fit_container": _container(fit),
        "infer_container": _container(infer),
        "fit_duration": duration_category(min(fit_seconds, settings.checkpoint_every)),
        "infer_duration": duration_category(INFER_START_S + n / INFER_PER_S),
        "project": project,
    }


def read_images(info: dict) -> dict[str, Image] | None:
    """The images run.json records (None: jobs use the access point's Python)."""
    recorded = info.get("images")
    return {kind: Image(**image) for kind, image in recorded.items()} if recorded else None


def render_submit_files(target: Path, run_dir: Path, settings: RunSettings, info: dict) -> None:
    """Write the submit files into ``target`` with paths for a run living at ``run_dir``."""
    values = template_values(run_dir, settings, info, read_images(info))
    for name in SUBMIT_FILES:
        text = render((TEMPLATES / name).read_text(), values, str(TEMPLATES / name))
        (target / name).write_text(text)


def dag_lines(fit_ids: Iterable[str], settings: RunSettings, python: str) -> Iterable[str]:
    yield "# lensjobs DAG: infer -> one fit node per candidate -> FINAL aggregate."
    yield "# Written by `lensjobs submit`; `lensjobs resubmit` reruns failed nodes via rescue DAGs."
    yield "CONFIG dagman.config"
    yield f"NODE_STATUS_FILE {Run.DAG}.status {STATUS_EVERY_S}"
    yield ""
    yield "JOB infer infer.sub"
    yield f"SCRIPT POST infer jobs/split.sh {python} $RETURN"
    yield "RETRY infer 2 UNLESS-EXIT 2"
    yield ""
    children = []
    for cid in fit_ids:
        node = fit_node(cid)
        children.append(node)
        yield f"JOB {node} fit.sub"
        yield f'VARS {node} ID="{cid}"'
        yield f"RETRY {node} 2 UNLESS-EXIT 2"
        yield f"CATEGORY {node} fits"
    yield ""
    yield f"MAXJOBS fits {settings.max_running_fits}"
    for start in range(0, len(children), 100):
        yield "PARENT infer CHILD " + " ".join(children[start : start + 100])
    yield ""
    yield "FINAL aggregate aggregate.sub"
    yield "SCRIPT POST aggregate jobs/final.sh $RETURN $FAILED_COUNT"


def write_dag(run: Run, fit_ids: list[str], settings: RunSettings) -> None:
    with run.dag.open("w") as f:
        for line in dag_lines(fit_ids, settings, sys.executable):
            f.write(line + "\n")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def create_run(
    input_path: Path,
    runs_dir: Path,
    settings: RunSettings,
    executor: str,
    images: dict[str, Image] | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Run, Candidates]:
    """Validate, then write the whole run directory under a temporary name and rename it into
    place, so a failure leaves nothing behind."""
    candidates = validate_candidates(input_path, progress)
    run = Run(runs_dir.resolve() / settings.name)
    if run.dir.exists():
        raise RunError(
            f"{run.dir} already exists; choose another --name, or use "
            f"'lensjobs resubmit {run.dir}' to go on with that run"
        )
    building = run.dir.with_name(f".{settings.name}.partial{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    try:
        building.mkdir(parents=True)
        staged = Run(building)
        for sub in ("infer", "nodes", "results", "summary"):
            (building / sub).mkdir()
        shutil.copytree(WRAPPERS, building / "jobs")
        _link_or_copy(input_path, staged.candidates)
        checksum = sha256_of(input_path)
        info = {
            "name": settings.name,
            "created": now(),
            "executor": executor,
            "input": {
                "path": str(input_path.resolve()),
                "sha256": checksum,
                "bytes": input_path.stat().st_size,
                "candidates": candidates.n,
                "fits": len(candidates.fit_ids),
            },
            "images": {k: image.model_dump() for k, image in images.items()} if images else None,
            "skipped": candidates.skipped,
            "settings": settings.model_dump(),
            "versions": versions(),
            "submissions": [],
        }
        if settings.osdf_dir:
            # OSDF caches by name: a changed catalogue must get a new one.
            name = f"lensjobs-{settings.name}-{checksum[:12]}.fits"
            info["input"]["osdf"] = f"{settings.osdf_dir}/{name}"
        # Paths inside the files are the final ones: the directory is renamed, not moved.
        render_submit_files(building, run.dir, settings, info)
        write_dag(staged, candidates.fit_ids, settings)
        staged.write_info(info)
        building.rename(run.dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return run, candidates


# Reading a DAG back: the subset of the DAG and submit languages written above, for the
# local executor and `lensjobs status`.


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
    from lensjobs.status import read_status_file

    dag, _ = read_status_file(run.status_file)
    return dag.get("DagStatus") == NodeState.DONE


def done_nodes(run: Run) -> set[str]:
    """Nodes that finished: every DONE node of a DAG that succeeded, else the latest rescue
    DAG's DONE list (what DAGMan itself would skip)."""
    from lensjobs.status import read_status_file

    if dag_succeeded(run) or not run.rescue_dags():
        _, ads = read_status_file(run.status_file)
        return {ad["Node"] for ad in ads if ad.get("NodeStatus") == NodeState.DONE}
    return done_in_rescue(run)


def write_rescue(run: Run, done: Iterable[str], comments: list[str]) -> Path:
    """The next partial rescue DAG, in DAGMan's format: DONE nodes are skipped when the DAG is
    submitted again (DAGMan picks the highest-numbered one itself)."""
    previous = run.rescue_dags()
    number = int(previous[-1].name[-3:]) + 1 if previous else 1
    path = run.dir / f"{Run.DAG}.rescue{number:03d}"
    lines = [
        *(f"# {line}" for line in comments),
        "# Rescue DAG version: 2.0.1 (partial)",
        "",
        *(f"DONE {name}" for name in sorted(done)),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def rerun_nodes(run: Run, nodes: list[str]) -> Path:
    """Write the next rescue DAG with ``nodes`` no longer DONE, so they run again."""
    comments = [f"Written by `lensjobs resubmit --nodes` for {Run.DAG}: {len(nodes)} forced."]
    return write_rescue(run, done_nodes(run) - set(nodes), comments)
