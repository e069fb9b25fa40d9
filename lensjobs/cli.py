"""The ``lensjobs`` command line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lensjobs.catalog import BANDS, CatalogError, open_catalog
from lensjobs.models.store import WeightsError, require_grid

if TYPE_CHECKING:
    from lensjobs.workflow.run import Run, RunSettings
    from lensjobs.workflow.status import RunStatus

app = typer.Typer(
    help="Strong-lens candidate catalogues to lens models at HTCondor scale.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_BAD_INPUT = 2


EXIT_FAULT = 1  # DESIGN.md: anything but 0, 2 and 85 is a fault, and DAGMan retries it


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """One line on stderr and an exit code (bad input unless told): never a traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def fault(where: Path, error: OSError) -> NoReturn:
    """A full disk or a network filesystem's hiccup: exit 1, which DAGMan retries."""
    fail(f"{where}: {error.strerror or error}; a fault, not bad input", EXIT_FAULT)


class LoggedProgress(Progress):
    """A bar on a terminal; where stderr is a file (job logs, pipes, make) a bar would only
    leave blank lines, so a plain line is written instead, at most every LOG_EVERY_S."""

    LOG_EVERY_S = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._logged = time.monotonic()
        self._done: set[TaskID] = set()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def update(self, task_id: TaskID, **changes: Any) -> None:
        super().update(task_id, **changes)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        if not self.disable or task_id in self._done:
            return
        if task.finished:
            self._done.add(task_id)
        elif time.monotonic() - self._logged < self.LOG_EVERY_S:
            return
        self._logged = time.monotonic()
        share = f" ({task.percentage:.0f} %)" if task.total else ""
        elapsed = f", {task.elapsed:.0f} s" if task.elapsed is not None else ""
        err.print(
            f"{task.description}: {task.completed:.0f}/{task.total or 0:.0f}{share}{elapsed}",
            highlight=False,
        )


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Progress]:
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with LoggedProgress(
        *columns, console=err, transient=True, disable=not err.is_terminal
    ) as progress:
        progress.add_task(description, total=total)
        yield progress


def _advance(progress: Progress):
    task = progress.task_ids[0]
    return lambda n: progress.advance(task, n)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(metavar="CANDIDATES", help="Candidate catalogue (FITS).")],
    max_problems: Annotated[int, typer.Option(help="Problem lines to list at most.")] = 20,
) -> None:
    """Check a candidate catalogue and summarise it on one screen."""
    try:
        catalog = open_catalog(file)
    except CatalogError as error:
        fail(str(error))
    with catalog:
        try:
            require_grid(catalog)
        except (CatalogError, WeightsError) as error:
            fail(str(error))
        with progress_bar("scanning cutouts", catalog.n) as progress:
            problems = catalog.scan(progress=_advance(progress))

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    usable = catalog.n - len(problems)
    summary.add_row("file", f"{file} ({file.stat().st_size / 1e6:.1f} MB)")
    summary.add_row("candidates", f"{catalog.n} ({usable} usable, {len(problems)} skipped)")
    bands = ",".join(catalog.file_bands)
    summary.add_row(
        "cutouts",
        f"{catalog.image_hdu}: {catalog.n} x {len(catalog.file_bands)} bands ({bands}) x "
        f"{catalog.num_pix}x{catalog.num_pix} px; using {','.join(BANDS)}",
    )
    summary.add_row("pixel scale", f"{catalog.pixscale:g} arcsec/px")
    summary.add_row("zero point", f"{catalog.magzero:g}")
    summary.add_row("PSF FWHM", catalog.fwhm_source)
    summary.add_row("IDs", f"{catalog.id_column} in {catalog.table_hdu}")
    other = [c for c in catalog.table.colnames if c != catalog.id_column]
    summary.add_row(
        "columns",
        f"{len(other)} carried through: {', '.join(other[:8])}"
        + (", ..." if len(other) > 8 else ""),
    )
    if catalog.defaults:
        summary.add_row("defaults", "; ".join(catalog.defaults) + " (keyword absent)")
    out.print(summary, highlight=False)

    if problems:
        out.print(f"[yellow]{len(problems)} candidate(s) skipped:[/]")
        for problem in problems[:max_problems]:
            out.print(f"  row {problem.row}  {problem.id}  {problem.reason}", highlight=False)
        if len(problems) > max_problems:
            out.print(f"  ... and {len(problems) - max_problems} more")
    if usable == 0:
        fail(f"{file}: none of the {catalog.n} cutouts is usable; check the IMAGES data")
    out.print(f"[green]ok:[/] {usable} candidate(s) ready", highlight=False)


@app.command()
def simulate(
    out_file: Annotated[Path, typer.Option("--out", help="Catalogue to write (FITS).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of systems.")] = 100,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    nonlens_frac: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of non-lenses (no source).")
    ] = 0.1,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0: one per core).")] = 0,
    broken: Annotated[
        int, typer.Option(min=0, help="Give the last N cutouts NaN pixels (demos, tests).")
    ] = 0,
    supersampling: Annotated[
        int,
        typer.Option(
            min=1,
            max=16,
            help="Sub-pixels per pixel side when rendering (fits sample 3; training sets "
            "need no more than 2).",
        ),
    ] = 8,
    model_breaking: Annotated[
        bool,
        typer.Option(
            "--model-breaking",
            help="Depart from the fitted model as real lenses do: power-law mass, Moffat PSF "
            "with a wrong FWHM, clumpy source, bulge + disk lens light, correlated noise.",
        ),
    ] = False,
    centre_max: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=2.0,
            help="Largest offset of the lens from the cutout centre per axis, arcsec.",
        ),
    ] = 0.5,
) -> None:
    """Simulate DES-like lens systems with truth and segmentation labels."""
    from lensjobs.simulate import SimulationSettings, simulate_catalog

    if broken > n:
        fail(f"--broken {broken}: more than the {n} systems (--n)")
    settings = SimulationSettings(
        nonlens_frac=nonlens_frac,
        supersampling=supersampling,
        model_breaking=model_breaking,
        centre_max=centre_max,
    )
    try:
        with progress_bar("simulating", n) as progress:
            simulate_catalog(
                out_file, n, seed, settings, workers or None, _advance(progress), broken
            )
    except OSError as error:
        fail(f"{out_file}: cannot write ({error.strerror or error}); choose a writable path")
    out.print(f"wrote {n} systems (seed {seed}) to {out_file}", highlight=False)


# The workflow: submit, status, resubmit, pull.


def _settings(**values) -> RunSettings:
    from pydantic import ValidationError

    from lensjobs.workflow.run import RunSettings, settings_error

    try:
        return RunSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        fail(settings_error(error))


def _open_run(path: Path) -> Run:
    from lensjobs.workflow.run import RunError, open_run

    try:
        return open_run(path)
    except RunError as error:
        fail(str(error))


_IMAGES = {"rich_help_panel": "Job images"}
_POOL = {"rich_help_panel": "Pool (OSPool, CHTC)"}


@app.command()
def submit(
    candidates: Annotated[
        Path, typer.Argument(metavar="CANDIDATES", help="Candidate catalogue (FITS).")
    ],
    name: Annotated[
        str | None, typer.Option(help="Run name (default: the catalogue's file name).")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    preset: Annotated[
        str, typer.Option(help="Fit preset: standard, mcmc, seed (the notebooks') or quick.")
    ] = "standard",
    fits_per_job: Annotated[
        int | None,
        typer.Option(
            min=1, help="Candidates per fit job.  [default: ~45 min of the preset's fits]"
        ),
    ] = None,
    infer_gpus: Annotated[int, typer.Option(help="GPUs for the infer node: 1, or 0.")] = 1,
    fit_memory: Annotated[
        str | None, typer.Option(help="Memory per fit job, e.g. 3GB.  [default: 2GB]")
    ] = None,
    fit_disk: Annotated[
        str | None,
        typer.Option(help="Disk per fit job.  [default: room for its batch's inputs and outputs]"),
    ] = None,
    max_running_fits: Annotated[
        int | None, typer.Option(help="Fit jobs queued at once (DAG MAXJOBS).  [default: 1000]")
    ] = None,
    fit_image: Annotated[
        str | None,
        typer.Option(help="Image for fit jobs: a .sif file, osdf:///… or docker://….", **_IMAGES),
    ] = None,
    infer_image: Annotated[
        str | None, typer.Option(help="Image for the infer job (as --fit-image).", **_IMAGES)
    ] = None,
    shared_fs: Annotated[
        bool,
        typer.Option(
            "--shared-fs",
            help="No images: jobs run this Python, for pools that share this filesystem.",
            **_IMAGES,
        ),
    ] = False,
    osdf_dir: Annotated[
        str | None,
        typer.Option(
            help="OSDF directory (osdf:///ospool/<ap>/data/<user>/<dir>) for the catalogue "
            "and images.",
            **_POOL,
        ),
    ] = None,
    project: Annotated[str | None, typer.Option(help="+ProjectName of the jobs.", **_POOL)] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            min=1, help="Seconds between a fit job's checkpoints.  [default: 900]", **_POOL
        ),
    ] = None,
    infer_gpu_memory: Annotated[
        str | None, typer.Option(help="Least GPU memory for infer, e.g. 8GB.", **_POOL)
    ] = None,
    infer_gpu_capability: Annotated[
        float | None, typer.Option(help="Least CUDA capability for infer, e.g. 8.0.", **_POOL)
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write the run; submit nothing.")] = (
        False
    ),
    local: Annotated[
        bool, typer.Option("--local", help="Run the DAG on this machine, no pool.")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="--local: nodes at once.")] = 2,
) -> None:
    """Validate a catalogue, write its run directory and DAG, and submit it.

    Jobs run from the fit and infer images (make images builds them); defaults come from
    $LENSJOBS_FIT_IMAGE / $LENSJOBS_INFER_IMAGE or ~/.config/lensjobs/config.toml."""
    from lensjobs.workflow.images import choose_images, osdf_area, read_config
    from lensjobs.workflow.run import NAME_PATTERN, RunError
    from lensjobs.workflow.write import create_run

    if name is None:
        name = candidates.name.removesuffix(".gz").removesuffix(".fits")
        if not NAME_PATTERN.fullmatch(name):
            fail(f"{candidates}: its file name is no run name; give --name (letters, digits, _ -)")
    try:
        config = read_config()
    except RunError as error:
        fail(str(error))
    settings = _settings(
        name=name,
        preset=preset,
        fits_per_job=fits_per_job,
        infer_gpus=infer_gpus,
        fit_memory=fit_memory,
        fit_disk=fit_disk,
        max_running_fits=max_running_fits,
        # --local runs every job with this Python, in this filesystem: no images.
        shared_fs=shared_fs or local,
        osdf_dir=None if local else osdf_dir or config.get("osdf_dir"),
        project=project or config.get("project"),
        checkpoint_every=checkpoint_every,
        infer_gpu_memory=infer_gpu_memory,
        infer_gpu_capability=infer_gpu_capability,
    )
    executor = "local" if local else "condor"
    try:
        if settings.osdf_dir and not dry_run:
            osdf_area(settings.osdf_dir)  # before anything is written
        images = None
        if not settings.shared_fs:
            given = {"fit": fit_image, "infer": infer_image}
            images = choose_images(given, settings.osdf_dir, config)
        with open_catalog(candidates) as catalog:  # headers only: the bar's total
            n = catalog.n
        with progress_bar("validating", n) as progress:
            run, found = create_run(
                candidates, runs_dir, settings, executor, images, _advance(progress)
            )
    except (CatalogError, RunError, WeightsError) as error:
        fail(str(error))
    skipped = f", {len(found.skipped)} skipped (bad cutouts)" if found.skipped else ""
    per_job = settings.fits_per_job
    jobs_needed = -(-len(found.fit_ids) // per_job)
    out.print(
        f"wrote {run.dir}: {len(found.fit_ids)} candidates to fit in {jobs_needed} fit "
        f"job(s) of up to {per_job}{skipped}",
        highlight=False,
    )
    for cid, reason in list(found.skipped.items())[:10]:
        out.print(f"  skipped {cid}: {reason}", highlight=False)
    info = run.read_info()
    _say_images(run, info)
    if dry_run:
        out.print(
            f"dry run: nothing submitted. To submit it as it is: cd {run.dir} && "
            f"condor_submit_dag -batch-name lensjobs:{settings.name} {run.DAG}",
            highlight=False,
        )
        return
    if settings.osdf_dir:
        _put_on_osdf(run, info)
    _start(run, jobs)


def _say_images(run: Run, info: dict) -> None:
    """Which images the jobs start from, and with OSDF what must be there before they do."""
    from lensjobs.workflow.images import osdf_uploads

    for image in (info["images"] or {}).values():
        out.print(
            f"{image['kind']} image: {image['container_image']} ({image['source']})",
            highlight=False,
        )
    if not info["images"]:
        where = "here" if info["executor"] == "local" else "on a shared filesystem"
        out.print(f"no images: jobs run with this machine's Python, {where}")
    uploads = osdf_uploads(info, run.candidates)
    if uploads:
        out.print("on OSDF (submit copies them into the OSDF area of this access point):")
        for source, url in uploads:
            out.print(f"  {source} -> {url}", highlight=False)


def _put_on_osdf(run: Run, info: dict) -> None:
    from lensjobs.workflow.images import osdf_uploads, put_on_osdf

    try:
        written = put_on_osdf(osdf_uploads(info, run.candidates))
    except OSError as error:
        fail(f"putting files on OSDF failed ({error}); the run is written, not submitted")
    for url in written:
        out.print(f"put {url}", highlight=False)


def _start(run: Run, jobs: int) -> None:
    """Submit to the schedd, or run here with --local."""
    from lensjobs.workflow.condor import batch_name
    from lensjobs.workflow.read import NodeState
    from lensjobs.workflow.run import RunError
    from lensjobs.workflow.submission import start

    local = run.read_info()["executor"] == "local"
    doing = f"running {run.name} locally" if local else f"submitting {run.name}"
    with progress_bar(doing, 1) as progress:
        task = progress.task_ids[0]

        def report(dag) -> None:
            finished = (NodeState.DONE, NodeState.ERROR, NodeState.FUTILE)
            nodes = dag.nodes.values()
            progress.update(
                task, total=len(dag.nodes), completed=sum(n.state in finished for n in nodes)
            )

        try:
            started = start(run, jobs, report)
        except RunError as error:
            fail(str(error))
    if started.executor == "local":
        _print_status(run)
        if not started.succeeded:
            raise typer.Exit(1)
        return
    out.print(
        f"submitted DAG cluster {started.cluster}, batch name {batch_name(run)}\n"
        f"  watch:   condor_q   (condor_q -dag -nobatch for its nodes)\n"
        f"           lensjobs status {run.dir} --watch\n"
        f"  results: lensjobs pull {run.dir} --to DIR   (once it has finished)",
        highlight=False,
    )


def _print_status(run: Run, max_problems: int = 20) -> None:
    from lensjobs.workflow.status import STATES, read_status

    status = read_status(run, max_problems)
    counts = ", ".join(f"{status.counts[s]} {s}" for s in STATES if status.counts[s])
    line = f"{run.name}: DAG {status.dag}; nodes: {counts or 'none yet'}"
    if status.updated:  # DAGMan rewrites the node status file every 30 s: say how fresh
        line += time.strftime(" (as of %H:%M:%S)", time.localtime(status.updated))
    out.print(line, highlight=False)
    if status.candidates:
        out.print(_candidates_line(status), highlight=False)
    for outcome in status.failed:
        out.print(
            f"[red]FAILED[/] {outcome.id} (fits_{outcome.batch}): {escape(outcome.reason)}",
            highlight=False,
        )
    if status.failed_count > len(status.failed):
        more = status.failed_count - len(status.failed)
        out.print(f"... and {more} more failed candidate(s); --max-problems shows more")
    for problem in status.problems:
        out.print(
            f"[red]{problem.state}[/] {problem.node}: {escape(problem.reason)}", highlight=False
        )
        for line in problem.stderr:
            out.print(f"    {line}", highlight=False, markup=False)
    if status.problem_count > len(status.problems):
        more = status.problem_count - len(status.problems)
        out.print(f"... and {more} more failed, removed or held node(s); --max-problems shows more")
    if status.dag == "failed":
        out.print(f"fix the cause, then: lensjobs resubmit {run.dir}", highlight=False)
    elif status.dag == "stopped":
        out.print(
            "no DAGMan runs this DAG any more (it was removed, or its job ended without "
            f"finishing); go on with: lensjobs resubmit {run.dir}",
            highlight=False,
        )
    elif status.dag == "starting":
        out.print("submitted; DAGMan has not written its node status yet", highlight=False)
    summary = run.summary / "index.html"
    if status.finished and summary.exists():
        out.print(f"gallery: {summary}", highlight=False)


def _candidates_line(status: RunStatus) -> str:
    """Candidates: finished by flag, in which running fit jobs, waiting; the ETA."""
    finished = status.finished_candidates
    flags = ", ".join(f"{n} {flag}" for flag, n in sorted(status.by_flag.items()))
    line = f"candidates: {finished}/{status.candidates} finished"
    line += f" ({flags})" if flags else ""
    running = sum(status.running.values())
    if running:
        nodes = sorted(status.running, key=lambda node: int(node.split("_")[1]))
        shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
        line += f"; {running} in running fit jobs ({shown})"
    if status.candidates - finished - running:
        line += f"; {status.candidates - finished - running} waiting"
    if status.skipped:
        line += f"; {status.skipped} skipped (bad cutouts)"
    if status.eta_seconds is not None:
        line += f"; about {_duration(status.eta_seconds)} to go"
    return line


def _duration(seconds: float) -> str:
    minutes = max(round(seconds / 60), 1)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@app.command()
def status(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN", help="Run directory made by 'lensjobs submit'.")
    ],
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until the DAG has finished.")
    ] = False,
    every: Annotated[float, typer.Option(min=1, help="--watch: seconds between refreshes.")] = 10,
    max_problems: Annotated[
        int, typer.Option(min=0, help="Failed or held nodes to explain at most.")
    ] = 20,
) -> None:
    """Where a run stands: nodes by state, progress, ETA, and why nodes failed or are held."""
    from lensjobs.workflow.status import read_status

    run = _open_run(run_dir)
    if not watch or not run.read_info()["submissions"]:  # a dry run never finishes
        _print_status(run, max_problems)
        return
    with progress_bar(f"{run.name}: candidates", 1) as progress:
        task = progress.task_ids[0]
        while not (current := read_status(run)).finished:
            done = current.finished_candidates
            progress.update(task, total=current.candidates or 1, completed=done)
            time.sleep(every)
    _print_status(run, max_problems)


@app.command()
def resubmit(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN", help="Run directory made by 'lensjobs submit'.")
    ],
    preset: Annotated[str | None, typer.Option(help="New fit preset for nodes that run.")] = None,
    fit_memory: Annotated[str | None, typer.Option(help="New memory per fit, e.g. 2GB.")] = None,
    nodes: Annotated[
        str | None, typer.Option(help="Candidate IDs (comma-separated) to fit again.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="--local: nodes at once.")] = 2,
) -> None:
    """Go on with a run: unfinished candidates (and --nodes ones) are fitted again; finished
    ones never are."""
    from lensjobs.workflow.run import RunError
    from lensjobs.workflow.submission import prepare_resubmit

    run = _open_run(run_dir)
    ids = [i.strip() for i in nodes.split(",") if i.strip()] if nodes else []
    changes = {k: v for k, v in {"preset": preset, "fit_memory": fit_memory}.items() if v}
    settings = _settings(**(run.read_info()["settings"] | changes)) if changes else None
    try:
        forced = prepare_resubmit(run, ids, settings)
    except RunError as error:
        fail(str(error))
    if ids:
        out.print(f"{len(ids)} candidate(s) to fit again, in {forced} fit job(s)", highlight=False)
    _start(run, jobs)


@app.command()
def pull(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN", help="Run directory made by 'lensjobs submit'.")
    ],
    to: Annotated[Path, typer.Option(help="Where to put the results.")],
) -> None:
    """Verify result tarballs against the manifest, extract them and the summary."""
    from lensjobs.workflow.pull import pull_results
    from lensjobs.workflow.run import RunError

    run = _open_run(run_dir)
    try:
        pulled = pull_results(run, to)
    except RunError as error:
        fail(str(error))
    out.print(
        f"extracted {len(pulled.extracted)} fit result(s) to {to / 'nodes'}; "
        f"gallery: {pulled.summary / 'index.html'}",
        highlight=False,
    )
    for cid in pulled.missing:
        out.print(f"[yellow]missing[/] {cid}: no result tarball", highlight=False)
    for line in pulled.failed:  # failed.txt: ID, status (FAILED or SKIPPED), reason
        cid, status, reason = [*line.split("\t", 2), "", ""][:3]
        said = "skipped" if status == "SKIPPED" else "failed"
        out.print(f"[yellow]{said}[/] {escape(cid)}: {escape(reason)}", highlight=False)
    if pulled.corrupt:
        for name in pulled.corrupt:
            err.print(
                f"[red]not trusted[/] {name}: its sha256 differs from the manifest "
                "(damaged or changed since the aggregate node ran)",
                highlight=False,
            )
        raise typer.Exit(1)


class Network(StrEnum):
    segmenter = "segmenter"
    regressor = "regressor"


@app.command("train")
def train_network(
    kind: Annotated[Network, typer.Argument(help="segmenter (U-Net) or regressor (EfficientNet).")],
    data: Annotated[
        list[Path],
        typer.Argument(
            metavar="DATA...", help="Training set(s) from 'lensjobs simulate', used together."
        ),
    ],
    test: Annotated[
        Path | None, typer.Option(help="Held-out simulated set (another seed) for metrics.")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Directory for weights and model card.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Maximum epochs (early stopping may end sooner); 0: no training, the --init "
            "weights re-calibrated and re-scored.",
        ),
    ] = 30,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Stop after this many minutes.")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(help="Directory with weights and a card of this kind to fine-tune."),
    ] = None,
) -> None:
    """Train a network on 'lensjobs simulate' output; writes safetensors and a model card."""
    from lensjobs.models.store import RELEASED
    from lensjobs.train import TrainingDataError, TrainSettings, train

    settings = TrainSettings(
        seed=seed, epochs=epochs, batch_size=batch_size, max_minutes=max_minutes
    )
    target = out_dir or RELEASED
    try:
        with progress_bar(f"training {kind.value}", 1000) as progress:
            task = progress.task_ids[0]

            def report(text: str, fraction: float) -> None:
                progress.update(task, completed=int(1000 * fraction), description=text)

            card = train(
                kind.value, data, test, target, settings, report, progress.console.log, init
            )
    except TrainingDataError as error:
        fail(str(error))
    done = (
        "re-calibrated"
        if epochs == 0
        else f"best epoch {card.training['best_epoch']}, {card.training['minutes']:.1f} min"
    )
    out.print(f"wrote {kind.value} to {target} ({done})", highlight=False)
    for key, value in card.metrics.items():
        out.print(f"  {key}: {value}", highlight=False)


node_app = typer.Typer(
    help="The commands DAG nodes run (also usable by hand).", no_args_is_help=True
)
app.add_typer(node_app, name="node")


@node_app.command("infer")
def node_infer(
    candidates: Annotated[
        Path, typer.Argument(metavar="CANDIDATES", help="Candidate catalogue (FITS).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for priors.fits.")],
    weights: Annotated[
        Path | None, typer.Option(help="Directory with segmenter/regressor weights and cards.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Cutouts per batch.")] = 512,
    device: Annotated[
        str | None, typer.Option(help="torch device (default: cuda if present).")
    ] = None,
) -> None:
    """Segment and regress every candidate; write priors.fits."""
    from lensjobs.infer import Networks, infer_catalog

    try:
        catalog = open_catalog(candidates)
        n = catalog.n
        catalog.close()
        networks = Networks(weights, device)
        with progress_bar("inferring", n) as progress:
            path = infer_catalog(candidates, out_dir, networks, batch_size, _advance(progress))
    except (CatalogError, WeightsError) as error:
        fail(str(error))
    out.print(f"wrote {path} ({n} candidates, {networks.device.type})", highlight=False)


@node_app.command("split")
def node_split(
    candidates: Annotated[
        Path, typer.Argument(metavar="CANDIDATES", help="Candidate catalogue (FITS).")
    ],
    priors: Annotated[Path, typer.Argument(help="priors.fits from 'lensjobs node infer'.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for <ID>/input.fits.")],
) -> None:
    """Write one fit input per candidate (the infer node's POST script)."""
    from lensjobs.split import DamagedPriors, split_priors

    try:
        with open_catalog(candidates) as catalog:
            n = catalog.n
        with progress_bar("splitting", n) as progress:
            ids = split_priors(candidates, priors, out_dir, _advance(progress))
    except (CatalogError, KeyError, ValueError) as error:
        fail(str(error).splitlines()[0] if str(error) else f"{priors}: unreadable priors file")
    except DamagedPriors as error:  # DAGMan runs the infer node again: it writes them anew
        fail(f"{error}; a fault, not bad input", EXIT_FAULT)
    except OSError as error:
        fault(out_dir, error)
    skipped = f" ({n - len(ids)} unusable cutout(s) skipped)" if n > len(ids) else ""
    out.print(f"wrote {len(ids)} fit inputs under {out_dir}{skipped}", highlight=False)


@node_app.command("fit")
def node_fit(
    input_path: Annotated[
        Path,
        typer.Argument(
            help="A fit input from 'lensjobs node split', or a folder of them named <ID>.fits "
            "(a batch: fitted one after another into OUT/<ID>/)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the fit's outputs.")],
    preset: Annotated[
        str, typer.Option(help="standard, mcmc, seed (the notebooks') or quick.")
    ] = "standard",
    checkpoint_every: Annotated[
        float | None,
        typer.Option(
            min=1, help="Save state and exit 85 after this many seconds; resume on restart."
        ),
    ] = None,
) -> None:
    """Fit one candidate, or a batch (PSO, gradient optimiser, Laplace or MCMC), single-threaded."""
    from threadpoolctl import threadpool_limits

    from lensjobs.fit.batch import run_batch
    from lensjobs.fit.inputs import FitInputError
    from lensjobs.fit.node import EXIT_CHECKPOINT, run_fit
    from lensjobs.fit.presets import PRESETS

    if preset not in PRESETS:
        fail(f"--preset {preset!r}: unknown; choose one of {', '.join(PRESETS)}")
    try:
        with threadpool_limits(limits=1):
            if input_path.is_dir():
                code = run_batch(
                    input_path,
                    out_dir,
                    preset,
                    checkpoint_every,
                    lambda cid, _: _say_fit(out_dir / cid),
                )
            else:
                code = run_fit(input_path, out_dir, preset, checkpoint_every)
                if code != EXIT_CHECKPOINT:
                    _say_fit(out_dir)
    except FitInputError as error:
        fail(str(error))
    except OSError as error:  # writing the outputs: never the candidate's fault
        fault(out_dir, error)
    if code == EXIT_CHECKPOINT:
        out.print(f"checkpoint saved in {out_dir}; run again to resume (exit {code})")
    raise typer.Exit(code)


def _say_fit(out_dir: Path) -> None:
    """One line per fit: its flag, θE, and why when it did not fit."""
    import json

    params = json.loads((out_dir / "params.json").read_text())
    theta = params.get("parameters", {}).get("theta_E_lens0", {}).get("median")
    line = f"{params['id']}: {params['flag']}"
    line += f", theta_E = {theta:.3f} arcsec" if theta is not None else ""
    line += f" ({params['reason']})" if params["reason"] else ""
    (err if params["flag"] == "FAILED" else out).print(line, highlight=False, markup=False)


@node_app.command("aggregate")
def node_aggregate(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN", help="Run directory made by 'lensjobs submit'.")
    ],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes for the PNGs (default: all cores).")
    ] = None,
) -> None:
    """The FINAL node: summary PNGs, catalogue, failed.txt, gallery and result tarballs."""
    from lensjobs.aggregate import aggregate_run

    run = _open_run(run_dir)
    try:
        with open_catalog(run.candidates) as catalog:
            n = catalog.n
        with progress_bar("summarising", n) as progress:
            report = aggregate_run(run.dir, workers, _advance(progress))
    except CatalogError as error:
        fail(str(error))
    counts = ", ".join(f"{n} {flag}" for flag, n in report.by_flag.items() if n)
    out.print(
        f"{report.candidates} candidates: {counts or 'no fits'}; {report.failed} not fitted "
        f"(failed.txt); {report.cpu_hours:.2f} CPU h\ngallery: {run.summary / 'index.html'}",
        highlight=False,
    )


def main() -> None:
    app()
