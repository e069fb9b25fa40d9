"""Write a run: validate the catalogue, then render ``submit/`` and ``jobs/`` into a new run
directory and write ``lensjobs.dag`` (and later rescue DAGs). Orchestration only: the
science is in the node commands the DAG runs (``lensjobs node infer|split|fit|aggregate``)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lensjobs.catalog import CatalogError, open_catalog
from lensjobs.files import atomic_write, sha256_of
from lensjobs.fit.presets import PRESETS
from lensjobs.models.store import require_grid
from lensjobs.workflow.batches import SKIP, batch_node, split_batches, write_batches
from lensjobs.workflow.images import Image, recorded_images
from lensjobs.workflow.read import done_nodes
from lensjobs.workflow.run import Run, RunError, RunSettings, now, versions

PROJECT = Path(__file__).resolve().parents[2]
TEMPLATES = PROJECT / "submit"
WRAPPERS = PROJECT / "jobs"
SUBMIT_FILES = ("infer.sub", "fit.sub", "aggregate.sub", "dagman.config")
FINAL = "aggregate"
STATUS_EVERY_S = 30
_TOKEN = re.compile(r"{{(\w+)}}")


@dataclass(frozen=True)
class Candidates:
    """What validation found: the IDs that get a fit node, and the skipped ones with why."""

    n: int
    fit_ids: list[str]
    skipped: dict[str, str]


def validate_candidates(path: Path, progress: Callable[[int], None] | None = None) -> Candidates:
    with open_catalog(path) as catalog:
        require_grid(catalog)
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
# (BENCHMARKS.md: 28 candidates/s on 2 cores, 8 orientations each); a GPU is faster.
INFER_START_S = 120
INFER_PER_S = 28
# A fit job's disk: room to work in, and per candidate its input, outputs (PNGs, chain,
# tarball: ~3 MB measured with the standard preset) and a checkpoint, twice over.
FIT_DISK_MB = 100
FIT_OUTPUT_MB = 8


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
    fits = settings.fits_per_job
    fit_seconds = fits * PRESETS[settings.preset].mean_cpu_seconds
    fit_disk = settings.fit_disk or FIT_DISK_MB + fits * FIT_OUTPUT_MB
    project = f'+ProjectName              = "{settings.project}"' if settings.project else ""
    # The catalogue, priors.fits (int16 maps: ~17 kB per candidate) and room to spare.
    infer_disk = (2 * info["input"]["bytes"] + n * 17_000) // 1_000_000 + 1000
    return {
        "run": str(run_dir),
        "preset": settings.preset,
        "checkpoint_every": str(settings.checkpoint_every),
        "fit_memory": f"{settings.fit_memory}MB",
        "fit_disk": _with_image(fit_disk, fit),
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


def render_submit_files(target: Path, run_dir: Path, settings: RunSettings, info: dict) -> None:
    """Write the submit files into ``target`` with paths for a run living at ``run_dir``."""
    values = template_values(run_dir, settings, info, recorded_images(info))
    for name in SUBMIT_FILES:
        text = render((TEMPLATES / name).read_text(), values, str(TEMPLATES / name))
        # resubmit rewrites them beside a DAG that may start at any moment: never half a file.
        atomic_write(target / name, lambda tmp, text=text: tmp.write_text(text))


def dag_lines(batches: int, settings: RunSettings, python: str) -> Iterable[str]:
    yield "# lensjobs DAG: infer -> fit nodes fits_<k>, a batch of candidates each -> FINAL"
    yield "# aggregate. Written by `lensjobs submit`; `lensjobs resubmit` reruns what is"
    yield "# unfinished through rescue DAGs. batches/<k>/ids.txt lists each batch's candidates."
    yield "CONFIG dagman.config"
    yield f"NODE_STATUS_FILE {Run.DAG}.status {STATUS_EVERY_S}"
    yield ""
    yield "JOB infer infer.sub"
    yield f"SCRIPT POST infer jobs/split.sh {python} $RETURN"
    yield "RETRY infer 2 UNLESS-EXIT 2"
    yield ""
    children = []
    for k in range(1, batches + 1):
        node = batch_node(k)
        children.append(node)
        yield f"JOB {node} fit.sub"
        yield f'VARS {node} BATCH="{k}"'
        yield f"SCRIPT PRE {node} jobs/stage.sh {python} {k}"
        yield f"SCRIPT POST {node} jobs/collect.sh {python} {k} $RETURN"
        yield f"PRE_SKIP {node} {SKIP}"
        yield f"RETRY {node} 2 UNLESS-EXIT 2"
        yield f"CATEGORY {node} fits"
    yield ""
    yield f"MAXJOBS fits {settings.max_running_fits}"
    for start in range(0, len(children), 100):
        yield "PARENT infer CHILD " + " ".join(children[start : start + 100])
    yield ""
    yield f"FINAL {FINAL} aggregate.sub"
    yield f"SCRIPT POST {FINAL} jobs/final.sh $RETURN $FAILED_COUNT"


def write_dag(run: Run, fit_ids: list[str], settings: RunSettings) -> None:
    batches = split_batches(fit_ids, settings.fits_per_job)
    write_batches(run.dir, batches)
    text = "".join(f"{line}\n" for line in dag_lines(len(batches), settings, sys.executable))
    atomic_write(run.dag, lambda tmp: tmp.write_text(text))


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
        for sub in ("infer", "nodes", "batches", "results", "summary"):
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
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text), durable=True)


def rerun_nodes(run: Run, nodes: set[str], why: str) -> Path:
    """Write the next rescue DAG with ``nodes`` no longer DONE, so they run again."""
    comments = [f"Written by `lensjobs resubmit` for {Run.DAG}: {why}."]
    # DAGMan runs the FINAL node whatever a rescue DAG says.
    return write_rescue(run, done_nodes(run) - nodes - {FINAL}, comments)
