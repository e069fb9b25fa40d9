"""PSO, gradient optimisation, then a Laplace approximation or emcee; resumable.

A fit goes through phases: ``pso`` (a particle swarm from the priors, every particle of an
iteration evaluated in one call), ``optimise`` (L-BFGS-B with exact gradients from the
PSO's best points), then either ``laplace`` (the posterior as a Gaussian around the
optimum, its covariance the inverse Hessian of -log L) or ``mcmc`` (emcee from the
optimum, or from the PSO's best for the notebooks' recipe), and ``done``.

Everything a fit needs to go on (swarm, optimum, chain, the random generators' states,
counts and time spent) lives in :class:`SamplerState`, saved as a ``.npz`` of plain arrays
plus JSON (never pickles). Random states are restored exactly and the MCMC advances in
fixed-size chunks, so a fit interrupted and resumed any number of times gives the same
result as an uninterrupted one.

MCMC convergence is decided from the chain itself (:func:`assess_chain`): the burn-in is
a few autocorrelation times measured on the chain's settled second half, and the chain
has converged when what follows the burn-in is ``tau_factor`` autocorrelation times long
and that time no longer moves when the last chunk is left out.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import emcee
import numpy as np
from scipy import optimize

from lensjobs.files import atomic_write
from lensjobs.fit.presets import FitPreset

# We report the autocorrelation time ourselves; emcee's warning about short chains is noise.
logging.getLogger("emcee.autocorr").setLevel(logging.ERROR)
# Clerc & Kennedy (2002) constriction coefficients.
PSO_INERTIA, PSO_COGNITIVE, PSO_SOCIAL = 0.7298, 1.49618, 1.49618
# MCMC walkers start within this fraction of the widths (prior sigmas, or the Laplace
# approximation's) around the start.
WALKER_SPREAD = 0.1
MOVES = {
    "stretch": lambda: None,  # emcee's default StretchMove
    "de": lambda: [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)],
}
BURN_IN_TAUS = 3.0  # burn-in: this many autocorrelation times of the settled chain
# Finite-difference step of the Hessian, in units of the parameters' prior widths.
HESSIAN_STEP = 1e-4
OPTIMISER_STARTS = 2  # L-BFGS-B from the best particle and the best one unlike it


@dataclass
class SamplerState:
    phase: str = "pso"  # pso -> optimise -> laplace | mcmc -> done
    rng: dict[str, Any] = field(default_factory=dict)
    iteration: int = 0
    position: np.ndarray | None = None
    velocity: np.ndarray | None = None
    best_position: np.ndarray | None = None
    best_logl: np.ndarray | None = None
    path: np.ndarray | None = None  # (k, ndim) best point after each PSO/optimiser step
    optimum: np.ndarray | None = None
    optimum_logl: float = -math.inf
    optimiser: dict[str, Any] = field(default_factory=dict)
    covariance: np.ndarray | None = None
    chain: np.ndarray | None = None  # (steps + 1, walkers, ndim), the start first
    log_prob: np.ndarray | None = None  # (steps + 1, walkers)
    accepted: np.ndarray | None = None  # (walkers,)
    mcmc_random: dict[str, Any] = field(default_factory=dict)
    tau: float = math.nan
    burn_in: int = 0
    converged: bool = False
    problem: str = ""  # why the result is not converged, when it is not
    evaluations: int = 0
    gradients: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    restarts: int = 0

    ARRAYS = (
        "position",
        "velocity",
        "best_position",
        "best_logl",
        "path",
        "optimum",
        "covariance",
        "chain",
        "log_prob",
        "accepted",
    )

    def save(self, path: Path) -> None:
        meta = {k: v for k, v in self.__dict__.items() if k not in self.ARRAYS}
        arrays = {k: getattr(self, k) for k in self.ARRAYS if getattr(self, k) is not None}
        atomic_write(path, lambda tmp: np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays))

    @classmethod
    def load(cls, path: Path) -> SamplerState:
        with np.load(path, allow_pickle=False) as data:
            state = cls(**json.loads(str(data["meta"])))
            for key in cls.ARRAYS:
                if key in data:
                    setattr(state, key, data[key])
        return state


@dataclass
class ChainAssessment:
    burn_in: int
    tau: float  # the largest integrated autocorrelation time after the burn-in, in steps
    converged: bool


def _tau(chain: np.ndarray) -> float:
    """The largest integrated autocorrelation time over parameters (inf when undefined,
    e.g. a parameter that never moved)."""
    if len(chain) < 2:
        return math.inf
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = emcee.autocorr.integrated_time(chain, quiet=True)
    return float(np.max(tau)) if np.all(np.isfinite(tau)) else math.inf


def assess_chain(
    chain: np.ndarray, min_burn_in: int, tau_factor: float, tau_rtol: float, chunk: int
) -> ChainAssessment:
    """Burn-in and convergence of an emcee chain ``(steps, walkers, ndim)``."""
    steps = len(chain)
    settled = _tau(chain[steps // 2 :])
    burn_in = min_burn_in if not math.isfinite(settled) else math.ceil(BURN_IN_TAUS * settled)
    burn_in = min(max(burn_in, min_burn_in), steps // 2)
    tau = _tau(chain[burn_in:])
    earlier = _tau(chain[burn_in : steps - chunk])
    converged = (
        math.isfinite(tau)
        and steps - burn_in >= tau_factor * tau
        and abs(tau - earlier) < tau_rtol * tau
    )
    return ChainAssessment(burn_in=burn_in, tau=tau, converged=converged)


def _random_state_to_json(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": keys.tolist(),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _random_state_from_json(d: dict[str, Any]) -> tuple:
    return (d["name"], np.array(d["keys"], dtype=np.uint32), d["pos"], d["has_gauss"], d["cached"])


class Sampler:
    """Runs one fit's phases, checkpointing between steps when asked to stop.

    ``logl_many(points)`` gives the log-likelihood of each row of ``points``;
    ``value_and_grad(point)`` one value and its gradient."""

    def __init__(
        self,
        logl_many: Callable[[np.ndarray], np.ndarray],
        value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
        init: np.ndarray,
        sigma: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        preset: FitPreset,
        seed: int,
    ) -> None:
        self.logl_many = logl_many
        self.value_and_grad = value_and_grad
        self.init, self.sigma, self.lower, self.upper = init, sigma, lower, upper
        self.preset = preset
        self.seed = seed
        self.ndim = len(init)
        self.nwalkers = preset.walker_ratio * self.ndim

    def _evaluate(self, state: SamplerState, points: np.ndarray) -> np.ndarray:
        state.evaluations += len(points)
        return np.array(self.logl_many(points), dtype=float)

    def start(self) -> SamplerState:
        state = SamplerState()
        rng = np.random.default_rng(self.seed)
        n = self.preset.pso_particles
        position = self.init + rng.normal(size=(n, self.ndim)) * self.sigma
        position[0] = self.init
        state.position = np.clip(position, self.lower, self.upper)
        state.velocity = rng.normal(size=(n, self.ndim)) * self.sigma * 0.1
        state.best_logl = self._evaluate(state, state.position)
        state.best_position = state.position.copy()
        state.path = state.best_position[[np.argmax(state.best_logl)]]
        state.rng = rng.bit_generator.state
        return state

    def run(self, state: SamplerState, should_stop: Callable[[], bool]) -> bool:
        """Advance ``state``; True when finished, False when ``should_stop`` asked to pause
        (checked after every PSO iteration, phase and MCMC chunk, so each run progresses)."""
        steps = {
            "pso": self._pso_step,
            "optimise": self._optimise,
            "laplace": self._laplace,
            "mcmc": self._mcmc_chunk,
        }
        while state.phase != "done":
            steps[state.phase](state)
            if state.phase != "done" and should_stop():
                return False
        return True

    def _pso_step(self, state: SamplerState) -> None:
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng
        best = state.best_position[np.argmax(state.best_logl)]
        r1, r2 = rng.random((2, *state.position.shape))
        state.velocity = (
            PSO_INERTIA * state.velocity
            + PSO_COGNITIVE * r1 * (state.best_position - state.position)
            + PSO_SOCIAL * r2 * (best - state.position)
        )
        state.position = np.clip(state.position + state.velocity, self.lower, self.upper)
        logl = self._evaluate(state, state.position)
        better = logl > state.best_logl
        state.best_position[better] = state.position[better]
        state.best_logl[better] = logl[better]
        state.path = np.vstack([state.path, state.best_position[np.argmax(state.best_logl)]])
        state.iteration += 1
        if state.iteration >= self.preset.pso_iterations:
            if self.preset.optimise:
                state.phase = "optimise"
            else:  # the notebooks' recipe: MCMC straight from the swarm's best
                state.optimum = state.best_position[np.argmax(state.best_logl)]
                state.optimum_logl = float(np.max(state.best_logl))
                self._start_mcmc(state, rng, self.sigma)
        state.rng = rng.bit_generator.state

    def _optimiser_starts(self, state: SamplerState) -> list[np.ndarray]:
        """The swarm's best point, and its best point at least 1 prior sigma away in some
        parameter (another basin, if the swarm found one)."""
        order = np.argsort(state.best_logl)[::-1]
        best = state.best_position[order[0]]
        starts = [best]
        for k in order[1:]:
            if len(starts) == OPTIMISER_STARTS:
                break
            if np.max(np.abs(state.best_position[k] - best) / self.sigma) > 1:
                starts.append(state.best_position[k])
        return starts

    def _optimise(self, state: SamplerState) -> None:
        found = optimise(
            self.value_and_grad,
            self._optimiser_starts(state),
            self.init,
            self.sigma,
            self.lower,
            self.upper,
            self.preset.optimiser_iterations,
        )
        state.gradients += found.gradients
        state.optimum, state.optimum_logl = found.optimum, found.log_likelihood
        state.optimiser = found.summary
        if len(found.path):
            state.path = np.vstack([state.path, found.path])
        if self.preset.sampler == "laplace":
            state.phase = "laplace"
        else:
            rng = np.random.default_rng()
            rng.bit_generator.state = state.rng
            self._laplace(state)
            widths = (
                np.sqrt(np.diag(state.covariance)) if state.covariance is not None else self.sigma
            )
            self._start_mcmc(state, rng, widths)
            state.rng = rng.bit_generator.state

    def _laplace(self, state: SamplerState) -> None:
        state.covariance, state.problem = laplace_covariance(
            self.value_and_grad, state.optimum, self.sigma
        )
        state.gradients += 2 * self.ndim
        if self.preset.sampler == "laplace":
            if not state.optimiser.get("success", False) and not state.problem:
                state.problem = f"the optimiser stopped early: {state.optimiser.get('message')}"
            state.converged = not state.problem
            state.phase = "done"

    def _start_mcmc(
        self, state: SamplerState, rng: np.random.Generator, widths: np.ndarray
    ) -> None:
        start = state.optimum
        walkers = start + rng.normal(size=(self.nwalkers, self.ndim)) * widths * WALKER_SPREAD
        walkers = np.clip(walkers, self.lower, self.upper)
        walkers[0] = start
        state.chain = walkers[None]
        state.log_prob = self._evaluate(state, walkers)[None]
        state.accepted = np.zeros(self.nwalkers)
        state.mcmc_random = _random_state_to_json(
            np.random.RandomState(int(rng.integers(2**31))).get_state()
        )
        state.problem = ""
        state.phase = "mcmc"

    def _log_prob(self, points: np.ndarray) -> np.ndarray:
        """log L inside the bounds (a flat prior), -inf outside."""
        inside = np.all((points >= self.lower) & (points <= self.upper), axis=1)
        out = np.full(len(points), -np.inf)
        if inside.any():
            out[inside] = self.logl_many(points[inside])
        return out

    def _mcmc_chunk(self, state: SamplerState) -> None:
        p = self.preset
        sampler = emcee.EnsembleSampler(
            self.nwalkers, self.ndim, self._log_prob, moves=MOVES[p.moves](), vectorize=True
        )
        start = emcee.State(
            state.chain[-1],
            log_prob=state.log_prob[-1],
            random_state=_random_state_from_json(state.mcmc_random),
        )
        end = sampler.run_mcmc(start, p.chunk, progress=False)
        state.evaluations += p.chunk * self.nwalkers
        state.chain = np.concatenate([state.chain, sampler.get_chain()])
        state.log_prob = np.concatenate([state.log_prob, sampler.get_log_prob()])
        state.accepted = state.accepted + sampler.acceptance_fraction * p.chunk
        state.mcmc_random = _random_state_to_json(end.random_state)
        steps = len(state.chain) - 1
        if steps < p.min_steps:
            return
        found = assess_chain(state.chain[1:], p.burn_in, p.tau_factor, p.tau_rtol, p.chunk)
        state.burn_in, state.tau, state.converged = found.burn_in, found.tau, found.converged
        if (p.converge and state.converged) or steps >= p.max_steps:
            if not state.converged:
                measured = f"{state.tau:.0f} steps" if math.isfinite(state.tau) else "undefined"
                state.problem = (
                    f"MCMC stopped at {steps} steps, autocorrelation time {measured} "
                    f"(needs {p.tau_factor:g} of them after a burn-in of {state.burn_in})"
                )
            state.phase = "done"


@dataclass
class Optimum:
    optimum: np.ndarray
    log_likelihood: float
    path: np.ndarray  # the best start's iterates, (k, ndim)
    gradients: int
    summary: dict[str, Any]


def optimise(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    starts: list[np.ndarray],
    origin: np.ndarray,
    scale: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    max_iterations: int,
) -> Optimum:
    """The highest log-likelihood L-BFGS-B reaches from any of ``starts``, within the bounds,
    in units of ``scale`` around ``origin`` (so that all parameters weigh alike)."""
    bounds = list(zip((lower - origin) / scale, (upper - origin) / scale, strict=True))
    count = 0

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal count
        count += 1
        value, grad = value_and_grad(origin + z * scale)
        return -float(value), -np.asarray(grad, dtype=float) * scale

    runs = []
    for start_point in starts:
        path: list[np.ndarray] = []
        result = optimize.minimize(
            objective,
            np.clip((start_point - origin) / scale, *np.transpose(bounds)),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=lambda z, path=path: path.append(origin + z * scale),
            options={"maxiter": max_iterations, "maxcor": 30},
        )
        runs.append((result, path))
    best, path = min(runs, key=lambda run: run[0].fun)
    return Optimum(
        optimum=np.clip(origin + best.x * scale, lower, upper),
        log_likelihood=-float(best.fun),
        path=np.array(path).reshape(-1, len(origin)),
        gradients=count,
        summary={
            "starts": len(runs),
            "iterations": int(sum(r.nit for r, _ in runs)),
            "success": bool(best.success),
            "message": str(best.message),
            "log_likelihoods": [-float(r.fun) for r, _ in runs],
        },
    )


def laplace_covariance(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    scale: np.ndarray,
) -> tuple[np.ndarray | None, str]:
    """The inverse Hessian of -log L at ``x0`` (central differences of the exact gradient,
    steps of HESSIAN_STEP x ``scale``), or None and why when -log L is not peaked there."""
    ndim = len(x0)
    step = HESSIAN_STEP * scale
    columns = []
    for d in range(ndim):
        offset = np.zeros(ndim)
        offset[d] = step[d]
        plus = np.asarray(value_and_grad(x0 + offset)[1])
        minus = np.asarray(value_and_grad(x0 - offset)[1])
        columns.append((plus - minus) / (2 * step[d]))
    hessian = -np.array(columns)
    hessian = (hessian + hessian.T) / 2
    # Scaled to unit diagonal, so that parameters of very different widths do not make a
    # well-determined matrix look singular.
    diag = np.sqrt(np.abs(np.diag(hessian)))
    diag[diag == 0] = 1.0
    scaled = hessian / np.outer(diag, diag)
    if not np.all(np.isfinite(scaled)):
        return None, "the log-likelihood's Hessian at the optimum is not finite"
    eigenvalues = np.linalg.eigvalsh(scaled)
    if eigenvalues.min() <= 1e-10 * eigenvalues.max():
        return (
            None,
            "the log-likelihood is not peaked at the optimum (Hessian not negative definite)",
        )
    return np.linalg.inv(scaled) / np.outer(diag, diag), ""


def posterior(state: SamplerState, preset: FitPreset, draws: int, seed: int) -> np.ndarray:
    """Posterior samples ``(n, ndim)``: the MCMC chain after its burn-in, or draws from the
    Laplace approximation (just the optimum when it has no covariance)."""
    if state.chain is not None:
        return state.chain[1 + state.burn_in :].reshape(-1, state.chain.shape[-1])
    if state.covariance is None:
        return state.optimum[None]
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(state.optimum, state.covariance, size=draws, method="eigh")


class Clock:
    """CPU and wall seconds of this process, added to what earlier runs spent."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.time()

    def charge(self, state: SamplerState) -> None:
        cpu, wall = time.process_time(), time.time()
        state.cpu_seconds += cpu - self.cpu
        state.wall_seconds += wall - self.wall
        self.cpu, self.wall = cpu, wall
