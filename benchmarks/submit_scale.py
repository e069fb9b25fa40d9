"""Time and peak memory of writing a whole run with ``lensjobs submit --dry-run`` (validation
of every cutout, the run directory, lensjobs.dag with its fit nodes, batches/ and the
submit files), at 10,000 and 100,000 candidates with the standard preset's default batch
size; then ``condor_submit_dag -no_submit`` on each DAG inside the personal pool's root,
to show HTCondor accepts it.

    containers/minicondor/pool.sh up
    .venv/bin/python benchmarks/submit_scale.py [--sizes 10000 100000]

Catalogues are a 100-system simulation tiled to size (new IDs), written under the pool's
share directory so that the run paths are the same inside the root.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import lensjobs

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "containers" / "minicondor" / "pool.sh"
SHARE = Path("/var/tmp/lensjobs-pool/share")


def timed_submit(catalog: Path, runs: Path, name: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of the submit command alone, via GNU time."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "lensjobs", "submit", str(catalog),
         "--runs-dir", str(runs), "--name", name, "--dry-run"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    return wall, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    work = SHARE / "bench-submit"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o1777)
    seed = work / "seed.fits"
    lensjobs("simulate", "--n", 100, "--seed", 4, "--out", seed)
    for size in args.sizes:
        catalog = work / f"tiled{size}.fits"
        # A separate process, so that this one never holds the tiled cube.
        subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "infer_speed.py"), str(seed),
             "--write-tiled", str(size // 100), str(catalog)],
            check=True,
        )  # fmt: skip
        wall, peak = timed_submit(catalog, work / "runs", f"scale{size}")
        run = work / "runs" / f"scale{size}"
        dag = (run / "lensjobs.dag").read_text()
        nodes = dag.count("\nJOB ") + dag.count("\nFINAL ")
        fit_nodes = dag.count("\nJOB fits_")
        print(
            f"{size} candidates ({catalog.stat().st_size / 1e9:.2f} GB): submit --dry-run "
            f"{wall:.1f} s, peak RSS {peak:.0f} MB, lensjobs.dag {len(dag) / 1e6:.2f} MB, "
            f"{nodes} nodes ({fit_nodes} fit nodes)",
            flush=True,
        )
        subprocess.run(["chmod", "-R", "a+rwX", str(run)], check=True)  # for the pool's user
        start = time.perf_counter()
        check = subprocess.run(
            [str(POOL), "run", f"cd {run} && condor_submit_dag -no_submit lensjobs.dag"],
            capture_output=True, text=True,
        )  # fmt: skip
        print(
            f"  condor_submit_dag -no_submit: exit {check.returncode} in "
            f"{time.perf_counter() - start:.1f} s; " + " ".join(check.stdout.split()[-12:]),
            flush=True,
        )
        catalog.unlink()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
