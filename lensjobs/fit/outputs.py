"""What a fit leaves behind: params.json, the notebooks' text summary, three PNGs,
posterior.npz and a tarball of them all. Every file is written atomically."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import corner
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import AsinhNorm

from lensjobs.catalog import BANDS
from lensjobs.display import colour, lens_curves
from lensjobs.files import atomic_write

CORNER_LABELPAD = 0.12  # in panels


def write_json(path: Path, data: dict[str, Any]) -> Path:
    text = json.dumps(data, indent=2, allow_nan=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _save_figure(fig: plt.Figure, path: Path) -> Path:
    def write(tmp: Path) -> None:
        fig.savefig(tmp, dpi=90, format="png")

    atomic_write(path, write)
    plt.close(fig)
    return path


def model_png(
    path: Path,
    cid: str,
    observed: np.ndarray,
    model: np.ndarray,
    residuals: np.ndarray,
    reduced_chi2: dict[str, float],
) -> Path:
    """3x3: rows g, r, i; columns observed, reconstructed, normalised residuals (-6..6)."""
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    for k, band in enumerate(BANDS):
        # asinh stretch: linear near the noise, logarithmic on the lens core, so arcs show.
        noise = 1.4826 * np.median(np.abs(observed[k] - np.median(observed[k])))
        norm = AsinhNorm(linear_width=2 * noise, vmin=-2 * noise, vmax=observed[k].max())
        for j, (image, title) in enumerate(((observed[k], "observed"), (model[k], "model"))):
            ax = axes[k, j]
            ax.imshow(image, origin="lower", cmap="gray", norm=norm)
            ax.set_title(f"{band} {title}", fontsize=9)
        ax = axes[k, 2]
        shown = ax.imshow(residuals[k], origin="lower", cmap="bwr", vmin=-6, vmax=6)
        ax.set_title(f"{band} normalised residuals, χ²ν = {reduced_chi2[band]:.2f}", fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.046)
        for ax in axes[k]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(cid)
    fig.tight_layout()
    return _save_figure(fig, path)


def _scale_bar(
    ax: plt.Axes, extent: float, arcsec: float = 1.0, centre: tuple[float, float] = (0, 0)
) -> None:
    x0, y0 = centre[0] - 0.9 * extent, centre[1] - 0.85 * extent
    ax.plot([x0, x0 + arcsec], [y0, y0], color="white", lw=2.5, solid_capstyle="butt")
    ax.text(x0 + arcsec / 2, y0 + 0.05 * extent, f'{arcsec:g}"', color="white",
            ha="center", va="bottom", fontsize=11)  # fmt: skip


def overview_png(
    path: Path,
    observed: np.ndarray,
    parts: np.ndarray,
    residuals: np.ndarray,
    mask: np.ndarray,
    rms: np.ndarray,
    pixscale: float,
    kwargs: dict[str, list[dict[str, float]]],
    source: np.ndarray,
) -> Path:
    """What an astronomer looks at first, in colour: the data with the critical curve, the
    model, the data minus the lens light (the arcs), the normalised residuals of the three
    bands together, and the reconstructed source with the caustic; masked pixels are
    outlined the same way in every image panel and grey in the residuals."""
    n = observed.shape[-1]
    half = n * pixscale / 2
    extent = (-half, half, -half, half)
    critical, caustics = lens_curves(kwargs["kwargs_lens"], 2 * half, pixscale)
    panels = (
        ("data", colour(observed, rms)),
        ("model", colour(parts.sum(axis=1), rms)),
        ("data - lens light", colour(observed - parts[:, 0], rms)),
    )
    fig, axes = plt.subplots(1, 5, figsize=(16.5, 3.6))
    for ax, (title, image) in zip(axes, panels, strict=False):
        ax.imshow(image, origin="lower", extent=extent, interpolation="nearest")
        ax.contour(mask, levels=[0.5], extent=extent, colors="0.7", linewidths=0.8,
                   linestyles="--")  # fmt: skip
        ax.set_title(title, fontsize=13)
    for ax in (axes[0], axes[2]):
        for x, y in critical:
            ax.plot(x, y, color="#ffd21f", lw=1)
    chi = np.nansum(residuals, axis=0) / np.sqrt(len(residuals))
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("0.6")
    shown = axes[3].imshow(np.where(mask > 0, chi, np.nan), origin="lower", extent=extent,
                           cmap=cmap, vmin=-5, vmax=5, interpolation="nearest")  # fmt: skip
    axes[3].set_title("normalised residuals, g+r+i", fontsize=13)
    fig.colorbar(shown, ax=axes[3], fraction=0.046, pad=0.02)
    src_half, (sx, sy) = source_window(kwargs)
    axes[4].imshow(colour(source, rms), origin="lower", interpolation="nearest",
                   extent=(sx - src_half, sx + src_half, sy - src_half, sy + src_half))  # fmt: skip
    for x, y in caustics:
        axes[4].plot(x, y, color="#ffd21f", lw=1)
    axes[4].set_xlim(sx - src_half, sx + src_half)
    axes[4].set_ylim(sy - src_half, sy + src_half)
    axes[4].set_title("source (model) and caustic", fontsize=13)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:4]:
        _scale_bar(ax, half)
    _scale_bar(axes[4], src_half, 0.5, (sx, sy))
    fig.tight_layout()
    return _save_figure(fig, path)


def source_window(kwargs: dict[str, list[dict[str, float]]]) -> tuple[float, tuple[float, float]]:
    """Half the size and the centre of the source panel: four half-light radii, at least 1"."""
    src = kwargs["kwargs_source"][0]
    return max(2.0 * src["R_sersic"], 0.5), (src["center_x"], src["center_y"])


def physical_corner_png(path: Path, samples: np.ndarray, labels: tuple[str, ...]) -> Path:
    """A corner plot of the physical lens parameters, sized to be read in the summary."""
    return corner_png(path, samples, list(labels), fontsize=14, figsize=9.5)


def corner_png(
    path: Path, samples: np.ndarray, names: list[str], fontsize: int = 7, figsize: float = 0
) -> Path:
    return _save_figure(corner_figure(samples, names, fontsize, figsize), path)


def corner_figure(
    samples: np.ndarray, names: list[str], fontsize: int = 7, figsize: float = 0
) -> plt.Figure:
    """The posterior's corner plot; a parameter held at a bound (no spread) gets a small
    range around its value, which corner cannot choose itself."""
    low, high = samples.min(axis=0), samples.max(axis=0)
    pad = 1e-3 * np.maximum(np.abs(low), 1.0)
    ranges = [
        (lo, hi) if hi > lo else (lo - d, hi + d) for lo, hi, d in zip(low, high, pad, strict=True)
    ]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # corner warns on the root logger when a chain is short
    try:
        fig = corner.corner(
            samples,
            labels=names,
            range=ranges,
            quantiles=[0.16, 0.5, 0.84],
            label_kwargs={"fontsize": fontsize},
            max_n_ticks=3,
            labelpad=CORNER_LABELPAD,
            **({"fig": plt.figure(figsize=(figsize, figsize))} if figsize else {}),
        )
        for ax in fig.axes:
            ax.tick_params(labelsize=fontsize * 0.8)
    finally:
        root.setLevel(level)
    # corner hangs its axis labels 0.3 + labelpad of a panel below and left of the panels,
    # partly outside the figure; fixed margins that hold them cost no extra drawing, where
    # a tight bounding box drew the figure twice (~0.25 CPU-s of a corner plot's ~1.2 s).
    width = fig.get_figwidth()
    panel = fig.axes[0].get_position().width * width
    margin = ((0.3 + CORNER_LABELPAD) * panel + 2.5 * fontsize / 72) / width
    fig.subplots_adjust(left=margin, bottom=margin, right=0.98, top=0.98)
    return fig


def trace_png(path: Path, state: Any, names: list[str]) -> Path:
    return _save_figure(trace_figure(state, names), path)


def trace_figure(state: Any, names: list[str]) -> plt.Figure:
    """How the fit got there, per parameter: the MCMC walkers' median and 16-84 % band per
    step (burn-in dotted), or the optimisation path (the swarm's best after each
    iteration, then the optimiser's steps; dotted where the optimiser took over)."""
    ndim = len(names)
    cols = 3
    rows = -(-ndim // cols)
    height = 1.8 * rows
    fig, axes = plt.subplots(rows, cols, figsize=(11, height), sharex=True, squeeze=False)
    if state.chain is not None:
        lo, mid, hi = np.percentile(state.chain, [16, 50, 84], axis=1)
        switch, label = state.burn_in, "MCMC step"
    else:
        lo = hi = None
        mid = state.path
        switch, label = state.iteration, "PSO iteration, then optimiser step"
    steps = np.arange(len(mid))
    for d, ax in enumerate(axes.flat):
        if d >= ndim:
            ax.set_visible(False)
            continue
        if lo is not None:
            ax.fill_between(steps, lo[:, d], hi[:, d], alpha=0.3)
        ax.plot(steps, mid[:, d], lw=1)
        ax.axvline(switch, color="k", ls=":", lw=0.8)
        ax.set_ylabel(names[d], fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(label, fontsize=7)
    # Fixed margins (in inches, for any number of rows), not tight_layout, which draws the
    # figure once more (~0.35 CPU-s).
    fig.subplots_adjust(
        left=0.07, right=0.99, bottom=0.6 / height, top=1 - 0.15 / height, wspace=0.3, hspace=0.12
    )
    return fig


def text_summary(path: Path, params: dict[str, Any]) -> Path:
    """The notebooks' ``<ID>.txt``: medians with errors, the error budget of the lens
    parameters, how the posterior was measured, fit statistics."""
    lines = [f"ID: {params['id']}", ""]
    for name, p in params["parameters"].items():
        lines.append(
            f"{name}: {p['median']:.5f} +{p['p84'] - p['median']:.5f} "
            f"-{p['median'] - p['p16']:.5f} (best fit {p['best']:.5f})"
        )
    lines += ["", "errors (statistical, systematic, total):"]
    for name, e in params["errors"].items():
        lines.append(f"{name}: {e['statistical']:.5f}, {e['systematic']:.5f}, {e['total']:.5f}")
    chi2 = params["reduced_chi2"]
    mcmc = params.get("mcmc")
    how = (
        f"MCMC: {mcmc['steps']} steps, {mcmc['walkers']} walkers, burn-in {mcmc['burn_in']}"
        if mcmc
        else f"Laplace approximation at the optimum ({params['optimiser'].get('iterations')} "
        "optimiser iterations)"
    )
    lines += [
        "",
        f"posterior: {how}, {len(params['parameters'])} parameters",
        f"log-likelihood: {params['log_likelihood']:.3f}",
        f"effective data points: {params['effective_data_points']}",
        "reduced chi^2: " + ", ".join(f"{k} {v:.3f}" for k, v in chi2.items()),
        f"flag: {params['flag']}" + (f" ({params['reason']})" if params["reason"] else ""),
        "warnings: " + ("; ".join(params["warnings"]) or "none"),
    ]
    return atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    return atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays))
