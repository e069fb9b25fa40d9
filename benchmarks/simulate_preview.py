"""Draw simulated cutouts (g,r,i composite) beside their segmentation labels.

.venv/bin/python benchmarks/simulate_preview.py CATALOG.fits preview.png [--n 8]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from astropy.io import fits
from matplotlib.colors import ListedColormap

from lensjobs.simulate import CLASS_NAMES

LABEL_COLOURS = ListedColormap(["#1f77ff", "#ffbf00", "#e0245e", "#202020"])


def composite(cutout: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """asinh-stretched RGB (i, r, g) scaled by each band's noise."""
    rgb = np.stack([cutout[2] / noise[2], cutout[1] / noise[1], cutout[0] / noise[0]], axis=-1)
    return np.clip(np.arcsinh(rgb / 3) / np.arcsinh(100 / 3), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("catalog")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    with fits.open(args.catalog) as hdul:
        images = hdul["IMAGES"].data[: args.n]
        labels = hdul["LABELS"].data[: args.n]
        truth = hdul["TRUTH"].data[: args.n]
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.8), squeeze=False)
    for k in range(n):
        noise = np.array([truth[f"NOISE_{b}"][k] for b in "GRI"])
        axes[0, k].imshow(composite(images[k], noise), origin="lower")
        axes[1, k].imshow(labels[k], cmap=LABEL_COLOURS, vmin=0, vmax=3, origin="lower")
        title = (
            f'θE={truth["THETA_E"][k]:.2f}" int={truth["N_INTERLOPERS"][k]}'
            if truth["IS_LENS"][k]
            else f"non-lens int={truth['N_INTERLOPERS'][k]}"
        )
        axes[0, k].set_title(title, fontsize=8)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=LABEL_COLOURS(c)) for c in range(4)]
    fig.legend(handles, CLASS_NAMES, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
