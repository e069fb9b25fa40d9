"""Job images: build both from nothing into an empty folder, build again (the cache), and
report sizes, build times, what each image holds and how long a job takes to start in it.

    .venv/bin/python benchmarks/images_build.py [--out DIR] [--inspect-only]

Needs root on Debian (as `make images`); the personal pool's root is built if absent, and
the start-up times are taken there, as the pool's user with `apptainer exec -C`, the way
HTCondor starts a job. DIR must be empty (a cold build) and visible inside the pool's root:
by default a new folder in the pool's share. --inspect-only reports on the images in DIR
without building."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARE = Path(os.environ.get("LENSJOBS_POOL_DIR", "/var/tmp/lensjobs-pool")) / "share"
BUILD = REPO / "containers" / "build-images.sh"
POOL = REPO / "containers" / "minicondor" / "pool.sh"
# What a fit job and the infer job import first: the start-up every job pays.
STARTS = {
    "fit": "import lensjobs.fit.node",
    "infer": "from lensjobs.infer import Networks; Networks(None, 'cpu')",
}
SHOWN = ("lensjobs", "lenstronomy", "numpy", "scipy", "astropy", "emcee", "matplotlib")
SHOWN_INFER = ("torch", "torchvision", "segmentation_models_pytorch", "timm")


def build(out: Path) -> float:
    env = {**os.environ, "LENSJOBS_IMAGE_DIR": str(out), "PYTHON": sys.executable}
    started = time.perf_counter()
    subprocess.run([str(BUILD), "all"], env=env, check=True)
    return time.perf_counter() - started


def in_pool(command: str) -> str:
    done = subprocess.run([str(POOL), "run", command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"in the pool: {command}: {done.stderr.strip()}")
    return done.stdout


def packages(image: Path) -> dict[str, str]:
    listed = in_pool(f"apptainer -s exec -C {image} python3 -m pip list --format json")
    return {p["name"].lower().replace("-", "_"): p["version"] for p in json.loads(listed)}


def start_seconds(image: Path, code: str, repeats: int = 3) -> float:
    """Median wall time of `apptainer exec` + the imports, as the pool's user."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        in_pool(f'apptainer -s exec -C {image} python3 -c "{code}"')
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="image folder (default: a new one)")
    parser.add_argument("--inspect-only", action="store_true", help="report, do not build")
    args = parser.parse_args()
    if args.out is None:
        SHARE.mkdir(parents=True, exist_ok=True)
        args.out = Path(tempfile.mkdtemp(prefix="bench-images-", dir=SHARE))
    print(f"images in {args.out}")
    if not args.inspect_only:
        if args.out.exists() and any(args.out.iterdir()):
            raise SystemExit(f"{args.out} is not empty: a cold build needs an empty folder")
        cold = build(args.out)
        cached = build(args.out)
        print(f"cold build of both: {cold:.0f} s; again, cached: {cached:.1f} s")
    for kind in ("fit", "infer"):
        image = (args.out / f"lensjobs-{kind}.sif").resolve()
        held = packages(image)
        shown = SHOWN + (SHOWN_INFER if kind == "infer" else ())
        versions = ", ".join(f"{p} {held.get(p, 'absent')}" for p in shown)
        print(
            f"{kind}: {image.name}: {image.stat().st_size / 1e6:.0f} MB, "
            f"{len(held)} Python packages ({versions}); torch: {held.get('torch', 'absent')}"
        )
        seconds = start_seconds(image, STARTS[kind])
        print(f"  start-up (exec + imports, median of 3): {seconds:.1f} s")


if __name__ == "__main__":
    main()
