"""Accuracy and cost of the fit presets on simulated systems the networks never saw.

    .venv/bin/python benchmarks/fit_accuracy.py --lenses 24 --nonlenses 3 \
        --presets standard --jobs 2 --out /tmp/fitbench
    .venv/bin/python benchmarks/fit_accuracy.py --lenses 24 --nonlenses 3 \
        --presets seed --only 3 --jobs 2 --out /tmp/fitbench

Simulates lenses (with interlopers and external shear in the truth) plus non-lenses with
seed 3 (training used 1, testing 2), runs the released networks (``node infer``), splits
the priors (``node split``) and fits every candidate with each preset (``node fit``,
``--jobs`` at a time, single-threaded each). Reports CPU seconds per fit, theta_E relative
errors, centre errors, flags, and how the non-lenses ended.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from common import lensjobs

from lensjobs.catalog import write_catalog
from lensjobs.simulate import SimulationSettings, simulate_catalog

SEED = 3


def make_catalog(out: Path, lenses: int, nonlenses: int) -> Path:
    parts = [
        simulate_catalog(
            out / "lenses.fits", lenses, SEED, SimulationSettings(nonlens_frac=0.0, shear_frac=0.7)
        ),
        simulate_catalog(
            out / "nonlenses.fits", nonlenses, SEED + 100, SimulationSettings(nonlens_frac=1.0)
        ),
    ]
    images, catalogs, truths = [], [], []
    for path in parts:
        with fits.open(path) as hdul:
            images.append(np.asarray(hdul["IMAGES"].data))
            catalogs.append(Table.read(hdul["CATALOG"]))
            truths.append(Table.read(hdul["TRUTH"]))
    truth = vstack(truths)
    return write_catalog(
        out / "candidates.fits",
        np.concatenate(images),
        vstack(catalogs),
        extra_hdus=[fits.BinTableHDU(truth, name="TRUTH")],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lenses", type=int, default=24)
    parser.add_argument("--nonlenses", type=int, default=3)
    parser.add_argument("--presets", default="standard")
    parser.add_argument("--only", type=int, help="fit only the first N lenses (slow presets)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fitbench"))
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    catalog = out / "candidates.fits"
    if not catalog.exists():
        make_catalog(out, args.lenses, args.nonlenses)
        for step in (
            ("infer", catalog, "--out", out / "infer"),
            ("split", catalog, out / "infer" / "priors.fits", "--out", out / "nodes"),
        ):
            lensjobs("node", *step)
    with fits.open(catalog) as hdul:
        truth = Table.read(hdul["TRUTH"])
    ids = list(truth["COADD_OBJECT_ID"])
    chosen = [i for i, lens in zip(ids, truth["IS_LENS"], strict=True) if lens][: args.only]
    chosen += [i for i, lens in zip(ids, truth["IS_LENS"], strict=True) if not lens]

    for preset in args.presets.split(","):

        def fit(cid: str, preset: str = preset) -> None:
            target = out / preset / cid
            if not (target / "params.json").exists():
                lensjobs(
                    "node",
                    "fit",
                    out / "nodes" / cid / "input.fits",
                    "--out",
                    target,
                    "--preset",
                    preset,
                    check=False,
                )

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(fit, chosen))
        report(out / preset, truth, chosen, preset)


def report(directory: Path, truth: Table, chosen: list[str], preset: str) -> None:
    rows = {r["COADD_OBJECT_ID"]: r for r in truth}
    cpu, rel, centre, flags, nonlens = [], [], [], {}, []
    for cid in chosen:
        params = json.loads((directory / cid / "params.json").read_text())
        t = rows[cid]
        flags[params["flag"]] = flags.get(params["flag"], 0) + 1
        if not t["IS_LENS"]:
            nonlens.append(params["flag"])
            continue
        p = params.get("parameters")
        if not p:
            continue
        cpu.append(params["cpu_seconds"])
        theta = p["theta_E_lens0"]["median"]
        rel.append(abs(theta - t["THETA_E"]) / t["THETA_E"])
        centre.append(
            np.hypot(
                p["center_x_lens_light0"]["median"] - t["CENTER_X"],
                p["center_y_lens_light0"]["median"] - t["CENTER_Y"],
            )
        )
    rel_a = np.array(rel)
    print(f"preset {preset}: {len(rel)} lenses fitted, {len(nonlens)} non-lenses")
    print(f"  CPU seconds per fit: median {np.median(cpu):.0f}, max {np.max(cpu):.0f}")
    print(
        f"  |dtheta_E|/theta_E: median {np.median(rel_a):.1%}, within 5 %: "
        f"{np.mean(rel_a < 0.05):.0%}, within 10 %: {np.mean(rel_a < 0.10):.0%}"
    )
    print(f"  centre error: median {np.median(centre):.3f} arcsec")
    print(f"  flags: {flags}; non-lenses: {nonlens}")


if __name__ == "__main__":
    main()
