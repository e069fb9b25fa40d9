"""The aggregate node (the DAG's FINAL node): everything under ``RUN/summary/`` and
``RUN/results/MANIFEST`` from whatever the fits left, however many failed.

Writes, each atomically, and byte-identically when run again on the same run directory:
``summary/<ID>.png`` per candidate (a fit's summary, else a card with its cutout,
segmentation and reason), ``summary/<ID>_thumb.png`` (the gallery's),
``summary/catalog.fits``, ``summary/catalog.csv``, ``summary/failed.txt``,
``summary/index.html``, ``results/MANIFEST`` and ``summary/lensjobs_<name>_results.tar.gz``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lensjobs.aggregate.collect import FLAGS, STATUSES, collect, cpu_total, read_run_info
from lensjobs.aggregate.cutouts import write_pictures
from lensjobs.aggregate.gallery import write_gallery
from lensjobs.aggregate.results import (
    results_table,
    write_catalog_csv,
    write_catalog_fits,
    write_failed,
    write_results_manifest,
)
from lensjobs.aggregate.summary import build_pngs, summary_task
from lensjobs.files import write_tarball


@dataclass(frozen=True)
class AggregateReport:
    """What an aggregate found and wrote."""

    run: Path
    candidates: int
    by_status: dict[str, int]  # DONE, FAILED, MISSING, SKIPPED (all four keys)
    by_flag: dict[str, int]  # every flag of collect.FLAGS, as a key
    failed: int  # lines in failed.txt: candidates not DONE
    cpu_hours: float  # the fits' own CPU time, summed
    pngs_built: int  # summary PNGs rendered now (the others were up to date)
    written: list[Path]  # catalogue, failed.txt, gallery, manifest, tarball; PNGs aside


def aggregate_run(
    run: Path, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> AggregateReport:
    """Summarise the run directory ``run``; ``progress(n)``: n more candidates done, out of
    the catalogue's rows. Raises :class:`lensjobs.catalog.CatalogError` only when
    ``run/candidates.fits`` cannot be read; anything missing after that is reported."""
    entries, inputs, id_column = collect(run)
    info = read_run_info(run)
    summary = run / "summary"
    fitted = [e for e in entries if e.fitted]
    if progress:
        progress(len(entries) - len(fitted))
    built = build_pngs(
        [summary_task(run, e) for e in fitted], workers or os.cpu_count() or 1, progress
    )
    pictures = write_pictures(run, entries)  # thumbnails; cards where there is no summary

    table = results_table(entries, inputs, id_column)
    tarball = summary / f"lensjobs_{info.name}_results.tar.gz"
    files = [
        write_catalog_fits(summary / "catalog.fits", table, info),
        write_catalog_csv(summary / "catalog.csv", table),
        write_failed(summary / "failed.txt", entries),
    ]
    downloads = [f.name for f in files] + [tarball.name]
    files.append(write_gallery(summary / "index.html", run, info, entries, downloads, inputs))
    pngs = [summary / f"{e.id}.png" for e in fitted]
    manifest = write_results_manifest(run / "results")
    write_tarball(tarball, pngs + pictures + files, info.mtime)

    status = Counter(e.status for e in entries)
    flag = Counter(e.flag for e in entries)
    cpu, _ = cpu_total(entries)
    return AggregateReport(
        run=run,
        candidates=len(entries),
        by_status={s: status[s] for s in STATUSES},
        by_flag={f: flag[f] for f in FLAGS},
        failed=len(entries) - status["DONE"],
        cpu_hours=cpu / 3600,
        pngs_built=built,
        written=[*files, manifest, tarball],
    )
