"""The ``lensjobs`` command line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lensjobs.catalog import BANDS, CatalogError, open_catalog

app = typer.Typer(
    help="Strong-lens candidate catalogues to lens models at HTCondor scale.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    """One line on stderr and the bad-input exit code: never a traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT)


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
    with Progress(*columns, console=err, transient=True) as progress:
        progress.add_task(description, total=total)
        yield progress


def _advance(progress: Progress):
    task = progress.task_ids[0]
    return lambda n: progress.advance(task, n)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Candidate catalogue (FITS).")],
    max_problems: Annotated[int, typer.Option(help="Problem lines to list at most.")] = 20,
) -> None:
    """Check a candidate catalogue and summarise it on one screen."""
    try:
        catalog = open_catalog(file)
    except CatalogError as error:
        fail(str(error))
    with catalog, progress_bar("scanning cutouts", catalog.n) as progress:
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
) -> None:
    """Simulate DES-like lens systems with truth and segmentation labels."""
    from lensjobs.simulate import SimulationSettings, simulate_catalog

    settings = SimulationSettings(nonlens_frac=nonlens_frac)
    try:
        with progress_bar("simulating", n) as progress:
            simulate_catalog(out_file, n, seed, settings, workers or None, _advance(progress))
    except OSError as error:
        fail(f"{out_file}: cannot write ({error.strerror or error}); choose a writable path")
    out.print(f"wrote {n} systems (seed {seed}) to {out_file}", highlight=False)


class Network(StrEnum):
    segmenter = "segmenter"
    regressor = "regressor"


@app.command("train")
def train_network(
    kind: Annotated[Network, typer.Argument(help="segmenter (U-Net) or regressor (EfficientNet).")],
    data: Annotated[Path, typer.Argument(help="Training set from 'lensjobs simulate'.")],
    test: Annotated[
        Path | None, typer.Option(help="Held-out simulated set (another seed) for metrics.")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Directory for weights and model card.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[
        int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")
    ] = 30,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Stop after this many minutes.")
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

            card = train(kind.value, data, test, target, settings, report, progress.console.log)
    except TrainingDataError as error:
        fail(str(error))
    out.print(
        f"wrote {kind.value} to {target} (best epoch {card.training['best_epoch']}, "
        f"{card.training['minutes']:.1f} min)",
        highlight=False,
    )
    for key, value in card.metrics.items():
        out.print(f"  {key}: {value}", highlight=False)


node_app = typer.Typer(
    help="The commands DAG nodes run (also usable by hand).", no_args_is_help=True
)
app.add_typer(node_app, name="node")


@node_app.command("infer")
def node_infer(
    candidates: Annotated[Path, typer.Argument(help="Candidate catalogue (FITS).")],
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
    from lensjobs.models.store import WeightsError

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
    candidates: Annotated[Path, typer.Argument(help="Candidate catalogue (FITS).")],
    priors: Annotated[Path, typer.Argument(help="priors.fits from 'lensjobs node infer'.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for <ID>/input.fits.")],
) -> None:
    """Write one fit input per candidate (the infer node's POST script)."""
    from lensjobs.split import split_priors

    try:
        with open_catalog(candidates) as catalog:
            n = catalog.n
        with progress_bar("splitting", n) as progress:
            ids = split_priors(candidates, priors, out_dir, _advance(progress))
    except (CatalogError, OSError, KeyError, ValueError) as error:
        fail(str(error).splitlines()[0] if str(error) else f"{priors}: unreadable priors file")
    out.print(f"wrote {len(ids)} fit inputs under {out_dir}", highlight=False)


@node_app.command("fit")
def node_fit(
    input_file: Annotated[Path, typer.Argument(help="A fit input from 'lensjobs node split'.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the fit's outputs.")],
    preset: Annotated[
        str, typer.Option(help="standard, seed (the notebooks') or quick.")
    ] = "standard",
    checkpoint_every: Annotated[
        float | None,
        typer.Option(
            min=1, help="Save state and exit 85 after this many seconds; resume on restart."
        ),
    ] = None,
) -> None:
    """Fit one candidate with lenstronomy (PSO + MCMC), single-threaded."""
    import json

    from threadpoolctl import threadpool_limits

    from lensjobs.fit.node import EXIT_CHECKPOINT, FitInputError, run_fit
    from lensjobs.fit.presets import PRESETS

    if preset not in PRESETS:
        fail(f"--preset {preset!r}: unknown; choose one of {', '.join(PRESETS)}")
    try:
        with threadpool_limits(limits=1):
            code = run_fit(input_file, out_dir, preset, checkpoint_every)
    except FitInputError as error:
        fail(str(error))
    if code == EXIT_CHECKPOINT:
        out.print(f"checkpoint saved in {out_dir}; run again to resume (exit {code})")
    else:
        params = json.loads((out_dir / "params.json").read_text())
        theta = params.get("parameters", {}).get("theta_E_lens0", {}).get("median")
        line = f"{params['id']}: {params['flag']}"
        line += f", theta_E = {theta:.3f} arcsec" if theta is not None else ""
        line += f" ({params['reason']})" if params["reason"] else ""
        (out if code == 0 else err).print(line, highlight=False)
    raise typer.Exit(code)


def main() -> None:
    app()
