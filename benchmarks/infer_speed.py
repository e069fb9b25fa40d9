"""Speed and peak memory of ``lensjobs node infer`` (segmenter and regressor together).

    .venv/bin/python benchmarks/infer_speed.py CATALOG.fits [--tile K] [--batch-size B]

``--write-tiled K OUT`` writes a K-times larger catalogue (the cutouts repeated, new IDs)
and exits; time that file in a second call, so that this process never held the big
arrays (a forked child's peak RSS counts its parent's pages until it execs).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table
from common import lensjobs

from lensjobs.catalog import open_catalog, write_catalog


def tiled(source: Path, k: int, out: Path) -> Path:
    with open_catalog(source) as cat:
        images = cat.cutouts(0, cat.n)
        n = cat.n
    ids = [f"tile{j}_{i}" for j in range(k) for i in range(n)]
    return write_catalog(out, np.tile(images, (k, 1, 1, 1)), Table({"COADD_OBJECT_ID": ids}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("catalog", type=Path)
    parser.add_argument("--write-tiled", nargs=2, metavar=("K", "OUT"))
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device")
    args = parser.parse_args()
    if args.write_tiled:
        k, out = args.write_tiled
        tiled(args.catalog, int(k), Path(out))
        return
    with open_catalog(args.catalog) as cat:
        n = cat.n
    device = ["--device", args.device] if args.device else []
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        start = time.perf_counter()
        lensjobs(
            "node", "infer", args.catalog, "--out", tmp, "--batch-size", args.batch_size, *device
        )
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"{n} candidates, batch {args.batch_size}, {os.cpu_count()} cores: {wall:.1f} s, "
        f"{n / wall:.0f} candidates/s (including start-up), peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
