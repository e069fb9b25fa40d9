"""Time ``lensjobs simulate`` on a training-set-sized run (issue target: 20,000 in < 15 min).

    .venv/bin/python benchmarks/simulate_speed.py [--n 20000] [--out /tmp/bench_sim.fits]

Runs the real command and prints wall time, systems per second and the peak memory of
the command and its workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_sim.fits"))
    args = parser.parse_args()
    command = [
        sys.executable,
        "-m",
        "lensjobs",
        "simulate",
        "--n",
        str(args.n),
        "--seed",
        str(args.seed),
        "--out",
        str(args.out),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"command: {' '.join(command[1:])}")
    print(
        f"systems: {args.n}  wall: {wall:.1f} s ({wall / 60:.2f} min)  "
        f"rate: {args.n / wall:.1f} systems/s  peak RSS (largest process): {peak_mb:.0f} MB  "
        f"file: {args.out.stat().st_size / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    main()
