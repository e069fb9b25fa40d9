"""The fit node: one candidate, from its priors to params.json, plots and a tarball;
resumable.

Exit codes (DESIGN.md): 0 done; 2 retrying cannot help (NO_ARCS, unusable pixels, a
numerical failure), with a params.json saying why; 85 checkpoint taken, start me again.

Flags, most serious first: FAILED (no fit), POOR_FIT (joint reduced chi^2 above
:data:`POOR_FIT_CHI2`), AT_BOUND (the posterior of a lens parameter piles up at a bound,
so its error is not to be trusted), NOT_CONVERGED (the optimiser or the chain did not
settle), OK.
"""

from __future__ import annotations

import hashlib
import math
import time
import traceback
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from lensjobs.catalog import BANDS, cutout_problems
from lensjobs.files import write_tarball
from lensjobs.fit import errors, likelihood, outputs
from lensjobs.fit.inputs import Candidate, FitInputError, read_candidate
from lensjobs.fit.likelihood import NAMES
from lensjobs.fit.model import (
    BOUNDS_TAKEN,
    LENS_PARAMETERS,
    PHYSICAL_LABELS,
    background_rms,
    likelihood_data,
    physical,
    start,
    to_kwargs,
)
from lensjobs.fit.presets import PRESETS, FitPreset
from lensjobs.fit.sampling import Clock, Sampler, SamplerState, posterior

EXIT_DONE, EXIT_BAD_INPUT, EXIT_CHECKPOINT = 0, 2, 85
CHECKPOINT = "checkpoint.npz"
POOR_FIT_CHI2 = 2.0  # joint reduced chi^2 above this: POOR_FIT
# A parameter is at a bound when its 16-84 % interval reaches within this fraction of its
# range from one: the posterior piles up there (MCMC), or its Gaussian runs past it
# (Laplace), so the error bar is not to be trusted.
BOUND_MARGIN = 0.02
SOURCE_PIXELS = 81  # per side of the overview's source panel


@dataclass
class Problem:
    """The likelihood, start and bounds of one candidate."""

    candidate: Candidate
    preset: FitPreset

    def __post_init__(self) -> None:
        self.data = likelihood_data(self.candidate, self.preset.supersampling)
        self.start = start(self.candidate)
        self.names = list(NAMES)

    def log_likelihood(self, args: np.ndarray) -> float:
        return float(likelihood.value(np.asarray(args, dtype=float), self.data))

    def log_posteriors(self, points: np.ndarray) -> np.ndarray:
        """Unnormalised log-posterior of each row (bounds are the sampler's)."""
        points = np.asarray(points, dtype=float)
        return np.array(likelihood.values(points, self.data)) + self.start.log_prior(points)

    def value_and_grad(self, args: np.ndarray) -> tuple[float, np.ndarray]:
        """The log-posterior and its gradient."""
        args = np.asarray(args, dtype=float)
        value, grad = likelihood.value_and_grad(args, self.data)
        prior = float(self.start.log_prior(args))
        return float(value) + prior, np.array(grad) + self.start.log_prior_gradient(args)

    @property
    def seed(self) -> int:
        return int(hashlib.sha256(self.candidate.id.encode()).hexdigest()[:8], 16)

    def sampler(self) -> Sampler:
        s = self.start
        return Sampler(
            self.log_posteriors,
            self.value_and_grad,
            s.init,
            s.sigma,
            s.lower,
            s.upper,
            self.preset,
            self.seed,
        )


def no_fit(out: Path, candidate_id: str, preset: str, flag: str, reason: str) -> int:
    """params.json without parameters, and the tarball every fit node leaves. NO_ARCS is an
    answer (exit 0: the node is done); FAILED means the inputs cannot be fitted (exit 2: a
    retry would fail the same way)."""
    params = outputs.write_json(
        out / "params.json",
        {
            "id": candidate_id,
            "preset": preset,
            "flag": flag,
            "reason": reason,
            "versions": _versions(),
        },
    )
    write_tarball(out / f"{candidate_id}.tar.gz", [params])
    return EXIT_DONE if flag == "NO_ARCS" else EXIT_BAD_INPUT


def _prior_problem(candidate: Candidate) -> str:
    """What makes the priors unusable, or ''."""
    for name in (
        "FWHM_G",
        "FWHM_R",
        "FWHM_I",
        "BKG_RMS_G",
        "BKG_RMS_R",
        "BKG_RMS_I",
        "THETA_E",
        "THETA_E_ERR",
        "CENTER_X_ERR",
        "CENTER_Y_ERR",
    ):
        value = candidate.prior.get(name)
        if value is None or not np.isfinite(value) or value <= 0:
            return f"{name} = {value} (needs a positive number)"
    for name in ("CENTER_X", "CENTER_Y", "E1", "E2", "E1_ERR", "E2_ERR"):
        value = candidate.prior.get(name)
        if value is None or not np.isfinite(value):
            return f"{name} = {value} (needs a number)"
    return ""


def _versions() -> dict[str, str]:
    return {p: version(p) for p in ("lensjobs", "jax", "lenstronomy", "emcee", "numpy")}


def run_fit(
    input_path: Path,
    out: Path,
    preset_name: str = "standard",
    checkpoint_every: float | None = None,
    *,
    deadline: float | None = None,
    expected_id: str | None = None,
) -> int:
    """Fit one candidate into ``out``; returns the node's exit code. The fit checkpoints
    and returns 85 once ``deadline`` (a time.time()) or ``checkpoint_every`` seconds from
    now has passed; ``expected_id`` is the ID a batch knows the input by."""
    clock = Clock()
    preset = PRESETS[preset_name]
    if preset.testing_only:  # workflow benchmarks: the workflow's cost, nothing of a fit's
        cid = expected_id or read_candidate(input_path).id
        return no_fit(out, cid, preset.name, "NO_ARCS", "trivial preset: not fitted")
    candidate = read_candidate(input_path)
    if expected_id is not None and candidate.id != expected_id:
        raise FitInputError(f"{input_path}: holds candidate {candidate.id!r}, not {expected_id!r}")
    out.mkdir(parents=True, exist_ok=True)
    if bool(candidate.prior.get("NO_ARCS", False)):
        return no_fit(
            out, candidate.id, preset.name, "NO_ARCS", "the segmenter found no arc pixels"
        )
    pixel_problems = [reason for _, reason in cutout_problems(candidate.cutout[None])]
    if not bool(candidate.prior.get("USABLE", True)) or pixel_problems:
        reason = candidate.prior.get("PROBLEM") or "; ".join(pixel_problems)
        return no_fit(out, candidate.id, preset.name, "FAILED", f"unusable pixels: {reason}")
    bad_prior = _prior_problem(candidate)
    if bad_prior:
        return no_fit(out, candidate.id, preset.name, "FAILED", f"unusable prior: {bad_prior}")
    try:
        problem = Problem(candidate, preset)
        sampler = problem.sampler()
    except (ValueError, IndexError, ArithmeticError, np.linalg.LinAlgError) as err:
        return _numerical_failure(out, candidate.id, preset.name, err)
    checkpoint = out / CHECKPOINT
    state = _resume(checkpoint) or sampler.start()
    if deadline is None:
        deadline = time.time() + checkpoint_every if checkpoint_every else math.inf
    try:
        finished = sampler.run(state, lambda: time.time() >= deadline)
    except (ValueError, IndexError, ArithmeticError, np.linalg.LinAlgError) as err:
        return _numerical_failure(out, candidate.id, preset.name, err)
    clock.charge(state)
    if not finished:
        state.save(checkpoint)
        return EXIT_CHECKPOINT
    # Outputs are not inputs: a fault in writing or plotting propagates, and the node is
    # retried, never reported as a candidate that cannot be fitted.
    _write_results(problem, state, out, clock)
    checkpoint.unlink(missing_ok=True)
    return EXIT_DONE


def _resume(checkpoint: Path) -> SamplerState | None:
    """The saved state, or None when there is none or it cannot be read (a checkpoint cut
    short by a crash: the fit starts over, losing CPU, nothing else)."""
    if not checkpoint.exists():
        return None
    try:
        state = SamplerState.load(checkpoint)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
        checkpoint.unlink(missing_ok=True)
        return None
    state.restarts += 1
    return state


def _numerical_failure(out: Path, cid: str, preset: str, err: Exception) -> int:
    """A numerical failure of the fit itself is deterministic for these inputs: FAILED."""
    where = traceback.extract_tb(err.__traceback__)[-1]
    reason = f"{type(err).__name__}: {err} ({Path(where.filename).name}:{where.lineno})"
    return no_fit(out, cid, preset, "FAILED", reason.replace("\n", " "))


def _summaries(samples: np.ndarray, best: np.ndarray, names: list[str]) -> dict[str, Any]:
    p16, p50, p84 = np.percentile(samples, [16, 50, 84], axis=0)
    return {
        n: {
            "median": float(p50[k]),
            "p16": float(p16[k]),
            "p84": float(p84[k]),
            "best": float(best[k]),
        }
        for k, n in enumerate(names)
    }


def at_bound(
    summaries: dict[str, Any], lower: np.ndarray, upper: np.ndarray, names: list[str]
) -> list[str]:
    """The parameters whose 16-84 % interval reaches a bound (BOUND_MARGIN)."""
    margin = BOUND_MARGIN * (upper - lower)
    return [
        n
        for k, n in enumerate(names)
        if summaries[n]["p16"] <= lower[k] + margin[k]
        or summaries[n]["p84"] >= upper[k] - margin[k]
    ]


def fit_quality(problem: Problem, best: np.ndarray) -> dict[str, Any]:
    """Model (and its lens-light and source parts), normalised residuals and reduced chi^2
    (per band and joint) of the best fit."""
    data = problem.data
    parts, amplitudes = (np.asarray(a) for a in likelihood.components(best, data))
    model = parts.sum(axis=1)
    mask = np.asarray(data.mask)
    variance = (
        np.maximum(model, 0) / np.asarray(data.exposure)[:, None, None]
        + np.asarray(data.background_var)[:, None, None]
    )
    residuals = (np.asarray(data.image) - model) / np.sqrt(variance) * mask
    n_data = int(mask.sum()) * len(BANDS)
    chi2 = {b: float(np.sum(residuals[k] ** 2) / mask.sum()) for k, b in enumerate(BANDS)}
    chi2["joint"] = float(np.sum(residuals**2) / max(n_data - len(best), 1))
    return {
        "observed": np.asarray(data.image),
        "model": model,
        "parts": parts,
        "residuals": np.where(mask > 0, residuals, np.nan),
        "reduced_chi2": chi2,
        "effective_data_points": n_data,
        "amplitudes": amplitudes,
    }


def overview(problem: Problem, best: np.ndarray, quality: dict[str, Any], path: Path) -> Path:
    """The colour overview of the best fit (outputs.overview_png), its source rendered in
    the source plane with each band's fitted amplitude."""
    data, kwargs = problem.data, to_kwargs(best)
    half, (sx, sy) = outputs.source_window(kwargs)
    side = np.linspace(-half, half, SOURCE_PIXELS)
    x, y = np.meshgrid(sx + side, sy + side)
    sersic = likelihood.sersic(
        x, y, data.core, *likelihood.sersic_parameters(best, "source_light0")
    )
    knot = likelihood.gaussian(x, y, *likelihood.gaussian_parameters(best, "source_light1"))
    # Components 1 and 2 of the fit's linear amplitudes (B, 3 + K) are the source's.
    amplitudes = quality["amplitudes"][:, 1:, None, None]
    source = np.asarray(amplitudes[:, 0] * sersic + amplitudes[:, 1] * knot) * data.pixscale**2
    return outputs.overview_png(
        path,
        quality["observed"],
        quality["parts"],
        quality["residuals"],
        np.asarray(data.mask),
        background_rms(problem.candidate),
        data.pixscale,
        kwargs,
        source,
    )


def _flag(state: SamplerState, chi2: float, bounded: list[str]) -> tuple[str, str]:
    lens_bounded = [n for n in bounded if n in LENS_PARAMETERS]
    if chi2 > POOR_FIT_CHI2:
        return "POOR_FIT", f"joint reduced chi^2 {chi2:.2f} > {POOR_FIT_CHI2:g}"
    if lens_bounded:
        return "AT_BOUND", "posterior at a bound: " + ", ".join(lens_bounded)
    if not state.converged:
        return "NOT_CONVERGED", state.problem
    return "OK", ""


def _write_results(problem: Problem, state: SamplerState, out: Path, clock: Clock) -> None:
    c, preset = problem.candidate, problem.preset
    samples = posterior(state, preset, preset.posterior_draws, problem.seed)
    best = state.optimum if state.chain is None else _chain_best(state)
    quality = fit_quality(problem, best)
    chi2 = quality["reduced_chi2"]
    summaries = _summaries(samples, best, problem.names)
    bounded = at_bound(summaries, problem.start.lower, problem.start.upper, problem.names)
    flag, reason = _flag(state, chi2["joint"], bounded)
    warnings = [f"{n} at its bound" for n in bounded if n not in (*LENS_PARAMETERS, *BOUNDS_TAKEN)]
    acceptance = None
    if state.chain is not None:
        acceptance = float(np.mean(state.accepted / (len(state.chain) - 1)))
        if not 0.1 < acceptance < 0.8:
            warnings.append(f"acceptance fraction {acceptance:.2f}")
    systematics = errors.calibration()
    files = [
        outputs.model_png(
            out / f"{c.id}_model.png",
            c.id,
            quality["observed"],
            quality["model"],
            quality["residuals"],
            chi2,
        ),
        outputs.corner_png(
            out / f"{c.id}_corner.png",
            samples[:, [problem.names.index(n) for n in LENS_PARAMETERS]],
            list(LENS_PARAMETERS),
        ),
        outputs.trace_png(out / f"{c.id}_trace.png", state, problem.names),
        overview(problem, best, quality, out / f"{c.id}_overview.png"),
        outputs.physical_corner_png(
            out / f"{c.id}_physical.png",
            physical(samples[:, [problem.names.index(n) for n in LENS_PARAMETERS]]),
            PHYSICAL_LABELS,
        ),
        # Samples and chains in float32 (their spread is far above its precision): a batch
        # job's checkpoint carries every finished fit's files.
        outputs.save_npz(
            out / "posterior.npz",
            samples=samples.astype(np.float32),
            names=np.array(problem.names),
            best=best,
            **({"covariance": state.covariance} if state.covariance is not None else {}),
            **(
                {"chain": state.chain.astype(np.float32), "log_prob": state.log_prob}
                if state.chain is not None
                else {}
            ),
        ),
    ]
    clock.charge(state)  # the whole fit, outputs included
    params = {
        "id": c.id,
        "preset": preset.name,
        "flag": flag,
        "reason": reason,
        "parameters": summaries,
        "errors": errors.error_budget(summaries, LENS_PARAMETERS, systematics["terms"]),
        "calibration": systematics["calibration"],
        "reduced_chi2": chi2,
        "log_likelihood": problem.log_likelihood(best),
        "effective_data_points": quality["effective_data_points"],
        "posterior": "laplace" if state.chain is None else "mcmc",
        "laplace_failed": state.fallback or None,
        "converged": state.converged,
        "optimiser": state.optimiser,
        "mcmc": None
        if state.chain is None
        else {
            "steps": len(state.chain) - 1,
            "burn_in": state.burn_in,
            "walkers": state.chain.shape[1],
            "autocorrelation_time": state.tau if math.isfinite(state.tau) else None,
            "acceptance_fraction": acceptance,
        },
        "pso": {"particles": preset.pso_particles, "iterations": preset.pso_iterations},
        "supersampling": preset.supersampling,
        "likelihood_evaluations": state.evaluations,
        "gradient_evaluations": state.gradients,
        "wall_seconds": round(state.wall_seconds, 2),
        "cpu_seconds": round(state.cpu_seconds, 2),
        "restarts": state.restarts,
        "warnings": warnings,
        "versions": _versions(),
    }
    files += [
        outputs.write_json(out / "params.json", params),
        outputs.text_summary(out / f"{c.id}.txt", params),
    ]
    write_tarball(out / f"{c.id}.tar.gz", files)


def _chain_best(state: SamplerState) -> np.ndarray:
    """The highest-likelihood point the chain visited after its burn-in."""
    after = slice(1 + state.burn_in, None)
    flat = state.log_prob[after].ravel()
    return state.chain[after].reshape(-1, state.chain.shape[-1])[np.argmax(flat)]
