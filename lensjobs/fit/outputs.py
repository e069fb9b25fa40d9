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
from lensjobs.files import atomic_write


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


def corner_png(path: Path, samples: np.ndarray, names: list[str]) -> Path:
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
            label_kwargs={"fontsize": 7},
        )
    finally:
        root.setLevel(level)
    return _save_figure(fig, path)


def trace_png(path: Path, state: Any, names: list[str]) -> Path:
    """How the fit got there, per parameter: the MCMC walkers' median and 16-84 % band per
    step (burn-in dotted), or the optimisation path (the swarm's best after each
    iteration, then the optimiser's steps; dotted where the optimiser took over)."""
    ndim = len(names)
    cols = 3
    rows = -(-ndim // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 1.8 * rows), sharex=True, squeeze=False)
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
    fig.tight_layout()
    return _save_figure(fig, path)


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
