"""Quality of the released networks, through ``lensjobs node infer``, on simulated systems
the networks never saw (use seeds other than the training seeds 1, 31 and 32).

    .venv/bin/python benchmarks/infer_quality.py data/test_seed34_breaking.fits [--weights DIR]

Reports the segmenter's IoU per class and mean IoU against LABELS, the regressor's errors
against TRUTH (lenses only; also split by the lens's offset from the cutout centre), the
calibration of its uncertainties (fraction of truths within 1 and 2 sigma; 68 % and 95 % if
calibrated), and how NO_ARCS flags non-lenses.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from common import lensjobs

from lensjobs.models.regressor import TRUTH_COLUMNS
from lensjobs.train import mean_iou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("catalog", type=Path)
    parser.add_argument("--weights", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = ["--weights", args.weights] if args.weights else []
        lensjobs("node", "infer", args.catalog, "--out", tmp, *weights)
        with fits.open(Path(tmp) / "priors.fits") as hdul:
            priors = Table.read(hdul["PRIORS"]).as_array()
            classes = np.asarray(hdul["PROBS"].data).argmax(axis=1)
    with fits.open(args.catalog) as hdul:
        truth = Table.read(hdul["TRUTH"]).as_array()
        labels = np.asarray(hdul["LABELS"].data)

    confusion = np.bincount((labels.astype(np.int64) * 4 + classes).ravel(), minlength=16)
    miou, per_class = mean_iou(confusion.reshape(4, 4))
    print(f"catalogue: {args.catalog} ({len(truth)} systems, {truth['IS_LENS'].sum()} lenses)")
    print(
        f"segmenter: mean IoU {miou:.3f}; arcs {per_class[0]:.3f}, lens light "
        f"{per_class[1]:.3f}, other {per_class[2]:.3f}, background {per_class[3]:.3f}"
    )

    lens = truth["IS_LENS"]
    error = {c: priors[c][lens] - truth[c][lens] for c in TRUTH_COLUMNS}
    centre = np.hypot(error["CENTER_X"], error["CENTER_Y"])
    rel = np.abs(error["THETA_E"]) / truth["THETA_E"][lens]
    print(
        f'regressor (lenses): median |dtheta_E| {np.median(np.abs(error["THETA_E"])):.3f}" '
        f"(relative {np.median(rel):.1%}; within 10 %: {np.mean(rel < 0.1):.1%}), "
        f'median centre error {np.median(centre):.3f}", median |de1| '
        f"{np.median(np.abs(error['E1'])):.3f}, |de2| {np.median(np.abs(error['E2'])):.3f}"
    )
    offset = np.maximum(np.abs(truth["CENTER_X"][lens]), np.abs(truth["CENTER_Y"][lens]))
    for name, near in (('within 0.5"', offset <= 0.5), ('0.5-1"', (offset > 0.5) & (offset <= 1))):
        if near.any():
            print(
                f"  lens offset {name} per axis ({near.sum()} lenses): median |dtheta_E| "
                f'{np.median(np.abs(error["THETA_E"][near])):.3f}", median centre error '
                f'{np.median(centre[near]):.3f}"'
            )
    for c in TRUTH_COLUMNS:
        z = np.abs(error[c]) / priors[f"{c}_ERR"][lens]
        print(
            f"  calibration {c}: {np.mean(z < 1):.1%} within 1 sigma, "
            f"{np.mean(z < 2):.1%} within 2 sigma"
        )
    flagged = priors["NO_ARCS"]
    print(
        f"NO_ARCS: {flagged[~lens].sum()}/{(~lens).sum()} non-lenses flagged, "
        f"{flagged[lens].sum()}/{lens.sum()} lenses flagged"
    )
    for band in "GRI":
        ratio = priors[f"BKG_RMS_{band}"] / truth[f"NOISE_{band}"]
        print(f"background rms {band}: median ratio to truth {np.median(ratio):.3f}")


if __name__ == "__main__":
    main()
