"""The fit's plots keep every label inside the picture (their margins are fixed, not fitted
to the drawn text, which would cost a second drawing)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lensjobs.fit import outputs
from lensjobs.fit.likelihood import NAMES
from lensjobs.fit.model import LENS_PARAMETERS, PHYSICAL_LABELS
from lensjobs.fit.sampling import SamplerState


def outside(fig: plt.Figure, panels: int) -> list[str]:
    """The panels of ``fig`` whose drawn labels and ticks reach past its edges (matplotlib's
    own measure, the one a tight bounding box takes), by their axis labels; at least
    ``panels`` labelled ones must be there to judge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    reach = []
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert sum(bool(ax.get_xlabel() or ax.get_ylabel()) for ax in shown) >= panels
    for ax in shown:
        e = ax.get_tightbbox(renderer)
        if e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1:
            reach.append(f"{ax.get_xlabel()}/{ax.get_ylabel()}")
    plt.close(fig)
    return reach


@pytest.mark.parametrize(
    ("labels", "fontsize", "figsize"),
    [(list(LENS_PARAMETERS), 7, 0), (list(PHYSICAL_LABELS), 14, 9.5)],
)
def test_corner_plots_keep_their_labels(labels: list[str], fontsize: int, figsize: float) -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal([1.2, 0.0, 0.1, -0.02, 0.05, 0.25, -0.3], 0.02, size=(2000, 7))
    fig = outputs.corner_figure(samples, labels, fontsize, figsize)
    # Corner labels the bottom row and the left column below the top: 2 * 7 - 2 panels.
    assert outside(fig, 2 * len(labels) - 2) == []


@pytest.mark.parametrize("names", [list(NAMES), list(NAMES[:4])])
def test_trace_keeps_its_labels(names: list[str]) -> None:
    rng = np.random.default_rng(1)
    state = SamplerState(path=np.cumsum(rng.normal(size=(300, len(names))), axis=0), iteration=120)
    assert outside(outputs.trace_figure(state, names), len(names)) == []
