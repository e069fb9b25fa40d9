"""The fit node: one candidate, PSO + MCMC, outputs and a tarball; resumable.

Exit codes (DESIGN.md): 0 done; 2 retrying cannot help (NO_ARCS, unusable pixels, a
numerical failure inside lenstronomy), with a params.json saying why; 85 checkpoint
taken, start me again.
"""

from __future__ import annotations

import hashlib
import math
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from lenstronomy.Analysis.image_reconstruction import MultiBandImageReconstruction
from lenstronomy.Workflow.fitting_sequence import FittingSequence

from lensjobs.catalog import BANDS, row_dict
from lensjobs.files import atomic_write, write_tarball
from lensjobs.fit import outputs
from lensjobs.fit.model import (
    KWARGS_CONSTRAINTS,
    KWARGS_MODEL,
    Candidate,
    kwargs_likelihood,
    kwargs_params,
    multi_band_list,
)
from lensjobs.fit.presets import PRESETS, FitPreset
from lensjobs.fit.sampling import Clock, Sampler, SamplerState, posterior

EXIT_DONE, EXIT_BAD_INPUT, EXIT_CHECKPOINT = 0, 2, 85
CHECKPOINT = "checkpoint.npz"
POOR_FIT_CHI2 = 2.0  # joint reduced chi^2 above this: POOR_FIT


class FitInputError(ValueError):
    """A fit input file that cannot be used; ``str(err)`` is one line."""


def read_candidate(path: Path) -> Candidate:
    """A per-candidate input file (``lensjobs node split`` writes them)."""
    try:
        with fits.open(path) as hdul:
            prior = Table.read(hdul["PRIOR"])[0]
            return Candidate(
                id=str(hdul[0].header["CANDID"]),
                cutout=np.asarray(hdul["CUTOUT"].data, dtype=np.float32),
                fwhm=np.array([prior[f"FWHM_{b.upper()}"] for b in BANDS], dtype=float),
                pixscale=float(hdul["CUTOUT"].header["PIXSCALE"]),
                magzero=float(hdul["CUTOUT"].header["MAGZERO"]),
                prior=row_dict(prior),
                classes=np.asarray(hdul["SEGMAP"].data, dtype=np.uint8),
            )
    except FileNotFoundError:
        raise FitInputError(f"{path}: no such fit input; run 'lensjobs node split' first") from None
    except (OSError, KeyError, IndexError, TypeError, ValueError):
        raise FitInputError(
            f"{path}: not a fit input (needs CUTOUT, SEGMAP and PRIOR extensions and a CANDID "
            "keyword); write it with 'lensjobs node split'"
        ) from None


def input_hdus(
    cid: str,
    cutout: np.ndarray,
    classes: np.ndarray,
    pixscale: float,
    magzero: float,
    prior: fits.BinTableHDU,
) -> fits.HDUList:
    """A fit input as an HDU list (``prior`` is a one-row table named PRIOR)."""
    primary = fits.PrimaryHDU()
    primary.header["CANDID"] = cid
    image = fits.ImageHDU(cutout.astype(np.float32), name="CUTOUT")
    image.header["PIXSCALE"] = pixscale
    image.header["MAGZERO"] = magzero
    image.header["BANDS"] = ",".join(BANDS)
    segmap = fits.ImageHDU(classes.astype(np.uint8), name="SEGMAP")
    return fits.HDUList([primary, image, segmap, prior])


def write_candidate(path: Path, candidate: Candidate) -> Path:
    c = candidate
    prior = fits.BinTableHDU(Table(rows=[c.prior], names=list(c.prior)), name="PRIOR")
    hdus = input_hdus(c.id, c.cutout, c.classes, c.pixscale, c.magzero, prior)
    return atomic_write(path, lambda tmp: hdus.writeto(tmp))


@dataclass
class Problem:
    """The lenstronomy problem of one candidate."""

    candidate: Candidate
    preset: FitPreset

    def __post_init__(self) -> None:
        c = self.candidate
        self.bands = multi_band_list(c, self.preset.supersampling)
        self.kwargs_likelihood = kwargs_likelihood(c)
        params = kwargs_params(c)
        self.sequence = FittingSequence(
            {"multi_band_list": self.bands, "multi_band_type": "multi-linear"},
            KWARGS_MODEL,
            KWARGS_CONSTRAINTS,
            self.kwargs_likelihood,
            params,
        )
        self.param = self.sequence.param_class
        self.likelihood = self.sequence.likelihood_class
        self.names = list(self.param.num_param()[1])
        kinds = {
            "lens_model": "kwargs_lens",
            "lens_light_model": "kwargs_lens_light",
            "source_model": "kwargs_source",
        }
        init = {kinds[k]: v[0] for k, v in params.items()}
        sigma = {kinds[k]: v[1] for k, v in params.items()}
        self.init = np.array(self.param.kwargs2args(**init))
        self.sigma = np.array(self.param.kwargs2args(**sigma))
        self.lower, self.upper = (np.array(v) for v in self.param.param_limits())

    def log_likelihood(self, args: np.ndarray) -> float:
        value = self.likelihood.logL(args)
        return float(value) if np.isfinite(value) else -1e18

    def sampler(self) -> Sampler:
        seed = int(hashlib.sha256(self.candidate.id.encode()).hexdigest()[:8], 16)
        return Sampler(
            self.log_likelihood, self.init, self.sigma, self.lower, self.upper, self.preset, seed
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
    return {p: version(p) for p in ("lensjobs", "lenstronomy", "emcee", "numpy")}


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
    if not bool(candidate.prior.get("USABLE", True)) or not np.all(np.isfinite(candidate.cutout)):
        reason = candidate.prior.get("PROBLEM") or "non-finite pixels"
        return no_fit(out, candidate.id, preset.name, "FAILED", f"unusable pixels: {reason}")
    bad_prior = _prior_problem(candidate)
    if bad_prior:
        return no_fit(out, candidate.id, preset.name, "FAILED", f"unusable prior: {bad_prior}")
    try:
        problem = Problem(candidate, preset)
        sampler = problem.sampler()
        checkpoint = out / CHECKPOINT
        if checkpoint.exists():
            state = SamplerState.load(checkpoint)
            state.restarts += 1
        else:
            state = sampler.start()
        if deadline is None:
            deadline = time.time() + checkpoint_every if checkpoint_every else math.inf
        finished = sampler.run(state, lambda: time.time() >= deadline)
        clock.charge(state)
        if not finished:
            state.save(checkpoint)
            return EXIT_CHECKPOINT
        _write_results(problem, state, out, clock)
        checkpoint.unlink(missing_ok=True)
    except (ValueError, IndexError, ArithmeticError, np.linalg.LinAlgError) as err:
        # Deterministic for these inputs: a retry would fail the same way. Other errors
        # (memory, I/O) propagate and the node is retried.
        where = traceback.extract_tb(err.__traceback__)[-1]
        reason = f"{type(err).__name__}: {err} ({Path(where.filename).name}:{where.lineno})"
        return no_fit(out, candidate.id, preset.name, "FAILED", reason.replace("\n", " "))
    return EXIT_DONE


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


def _write_results(problem: Problem, state: SamplerState, out: Path, clock: Clock) -> None:
    c, preset = problem.candidate, problem.preset
    samples = posterior(state, preset)
    flat_logp = state.log_prob[1 + preset.burn_in :].ravel()
    best = samples[np.argmax(flat_logp)]
    kwargs_best = problem.param.args2kwargs(best)
    recon = MultiBandImageReconstruction(
        problem.bands,
        KWARGS_MODEL,
        kwargs_best,
        multi_band_type="multi-linear",
        kwargs_likelihood=problem.kwargs_likelihood,
        verbose=False,
    )
    bands = recon.model_band_list
    chi2 = {b: float(bands[k].reduced_x2) for k, b in enumerate(BANDS)}
    logl = float(problem.likelihood.logL(best))
    n_data = int(problem.likelihood.num_data)
    chi2["joint"] = float(-2 * logl / max(n_data - len(best), 1))
    acceptance = float(np.mean(state.accepted / (len(state.chain) - 1)))
    warnings = []
    flag, reason = "OK", ""
    if not state.converged:
        tau = state.tau[-1] if state.tau else math.nan
        # Short chains (the quick preset) end before the autocorrelation time is measured.
        measured = f"{tau:.0f} steps" if math.isfinite(tau) else "not measured yet"
        flag, reason = (
            "NOT_CONVERGED",
            f"MCMC stopped at {len(state.chain) - 1} steps, autocorrelation time {measured}",
        )
    if chi2["joint"] > POOR_FIT_CHI2:
        flag, reason = "POOR_FIT", f"joint reduced chi^2 {chi2['joint']:.2f} > {POOR_FIT_CHI2:g}"
    if not 0.1 < acceptance < 0.8:
        warnings.append(f"acceptance fraction {acceptance:.2f}")
    observed = np.stack([b[0]["image_data"] for b in problem.bands])
    model = np.stack([b.model for b in bands])
    residuals = np.stack([b.norm_residuals for b in bands])
    files = [
        outputs.model_png(out / f"{c.id}_model.png", c.id, observed, model, residuals, chi2),
        outputs.corner_png(out / f"{c.id}_corner.png", samples, problem.names),
        outputs.trace_png(out / f"{c.id}_trace.png", state.chain, problem.names, preset.burn_in),
        outputs.save_npz(
            out / "chain.npz",
            chain=state.chain,
            log_prob=state.log_prob,
            names=np.array(problem.names),
        ),
    ]
    clock.charge(state)  # the whole fit, outputs included
    params = {
        "id": c.id,
        "preset": preset.name,
        "flag": flag,
        "reason": reason,
        "parameters": _summaries(samples, best, problem.names),
        "reduced_chi2": chi2,
        "log_likelihood": logl,
        "effective_data_points": n_data,
        "acceptance_fraction": acceptance,
        "autocorrelation_time": state.tau[-1] if state.tau else None,
        "converged": state.converged,
        "steps": len(state.chain) - 1,
        "burn_in": preset.burn_in,
        "walkers": state.chain.shape[1],
        "pso": {"particles": preset.pso_particles, "iterations": preset.pso_iterations},
        "likelihood_evaluations": state.evaluations,
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
