"""Speed and peak memory of the aggregate node on a large run.

    .venv/bin/python benchmarks/aggregate_speed.py --n 1000 --workers 2 --out /tmp/aggbench

Makes a run directory of N candidates: one simulated lens tiled N times (new IDs), the
released networks over all of them (``node infer``), one real quick fit, and that fit's
outputs replicated under every other ID (hard links; params.json rewritten with the ID), so
every candidate has a finished fit. Then times ``aggregate_run`` in a fresh process twice:
from scratch (every summary PNG rendered) and again (all up to date, as when the DAG's
FINAL node is retried). Peak RSS: sampled over the process tree (main and workers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import Table
from common import lensjobs

from lensjobs.catalog import open_catalog, write_catalog

AGGREGATE = (
    "import sys; from pathlib import Path; from lensjobs.aggregate import aggregate_run; "
    "print(aggregate_run(Path(sys.argv[1]), workers=int(sys.argv[2])))"
)


def make_run(run: Path, n: int) -> None:
    work = run.parent / "work"
    work.mkdir(parents=True, exist_ok=True)
    one = work / "one.fits"
    lensjobs("simulate", "--n", 1, "--seed", 3, "--nonlens-frac", 0, "--out", one)
    with open_catalog(one) as catalog:
        image = catalog.cutouts(0, 1)
    rng = np.random.default_rng(0)
    table = Table(
        {
            "COADD_OBJECT_ID": [f"bench_{i:06d}" for i in range(n)],
            "RA": rng.uniform(0, 360, n),
            "DEC": rng.uniform(-60, 0, n),
            "TILENAME": ["BENCH"] * n,
        }
    )
    write_catalog(run / "candidates.fits", np.repeat(image, n, axis=0), table)
    lensjobs("node", "infer", run / "candidates.fits", "--out", run / "infer")
    nodes = run / "nodes"
    lensjobs(
        "node", "split", run / "candidates.fits", run / "infer" / "priors.fits", "--out", nodes
    )
    first = table["COADD_OBJECT_ID"][0]
    fit = nodes / first
    lensjobs("node", "fit", fit / "input.fits", "--out", fit, "--preset", "quick")
    (run / "results").mkdir()
    os.link(fit / f"{first}.tar.gz", run / "results" / f"{first}.tar.gz")
    params = json.loads((fit / "params.json").read_text())
    for cid in table["COADD_OBJECT_ID"][1:]:
        node = nodes / cid
        for f in fit.iterdir():
            if f.name not in ("params.json", "input.fits"):
                os.link(f, node / f.name.replace(first, cid))
        (node / "params.json").write_text(json.dumps({**params, "id": cid}, indent=2))
        os.link(fit / f"{first}.tar.gz", run / "results" / f"{cid}.tar.gz")
    info = {
        "name": "bench",
        "created": "2026-11-24T00:00:00+00:00",
        "settings": {"preset": "quick"},
    }
    (run / "run.json").write_text(json.dumps(info))
    shutil.rmtree(work)


def _tree_rss(root: int) -> tuple[float, float]:
    """RSS in MB of ``root`` and its descendants: (all summed, the largest one)."""
    parent, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE") / 1e6
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            parent[int(entry.name)], rss[int(entry.name)] = int(fields[1]), int(fields[21]) * page
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(frontier)
    sizes = [rss.get(pid, 0.0) for pid in tree]
    return sum(sizes), max(sizes)


def timed_aggregate(run: Path, workers: int) -> tuple[float, float, float, str]:
    """(wall seconds, peak RSS MB summed over the processes, of the largest one, report);
    RSS sampled every 0.2 s (pool workers are not children the parent waits for, so
    getrusage would miss them)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", AGGREGATE, str(run), str(workers)],
        stdout=subprocess.PIPE,
        text=True,
    )
    total = largest = 0.0
    while child.poll() is None:
        now_total, now_largest = _tree_rss(child.pid)
        total, largest = max(total, now_total), max(largest, now_largest)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"aggregate failed (exit {child.returncode})")
    return wall, total, largest, child.stdout.read().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/aggbench"))
    args = parser.parse_args()
    run = args.out / "run"
    if not (run / "run.json").exists():
        shutil.rmtree(args.out, ignore_errors=True)
        run.mkdir(parents=True)
        make_run(run, args.n)
    shutil.rmtree(run / "summary", ignore_errors=True)
    for label in ("from scratch", "again (up to date)"):
        wall, total, largest, report = timed_aggregate(run, args.workers)
        print(
            f"{label}: {args.n} candidates, {args.workers} workers: {wall:.1f} s, peak RSS "
            f"{total:.0f} MB over all processes, {largest:.0f} MB the largest"
        )
    print(report)
    summary = run / "summary"
    size = sum(f.stat().st_size for f in summary.iterdir()) / 1e6
    tarball = next(summary.glob("*.tar.gz")).stat().st_size / 1e6
    print(f"summary/: {size:.0f} MB, of which the tarball {tarball:.0f} MB")


if __name__ == "__main__":
    main()
