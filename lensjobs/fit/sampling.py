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

MCMC convergence is decided from the chain itself (:func:`assess_chain`): the burn-in
lasts until the walkers have arrived where the chain's second half lives, and at least a
few autocorrelation times; the chain has converged when what follows the burn-in is
``tau_factor`` autocorrelation times long and that time no longer moves when the last
chunk is left out.
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
# The optimiser's Newton polish: steps at most, and the expected gain in log p below which
# it has reached the peak (0.005: within 0.1 posterior widths).
NEWTON_STEPS = 15
NEWTON_TOL = 0.005
# A parameter this close to a bound (in units of its range) is pinned there.
PINNED = 1e-6
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
    optimum_logp: float = -math.inf
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
    fallback: str = ""  # why a Laplace preset fell back on MCMC
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
    chain: np.ndarray,
    log_prob: np.ndarray,
    min_burn_in: int,
    tau_factor: float,
    tau_rtol: float,
    chunk: int,
) -> ChainAssessment:
    """Burn-in and convergence of an emcee chain ``(steps, walkers, ndim)`` with its
    ``log_prob`` ``(steps, walkers)``.

    The burn-in ends once the walkers have arrived (their mean log-probability first
    reaches the 2.5th percentile of what it is over the chain's second half) and is at
    least BURN_IN_TAUS autocorrelation times of that half, and the preset's minimum. The
    chain has converged when what follows is ``tau_factor`` autocorrelation times long and
    that time moved less than ``tau_rtol`` when the last chunk is left out."""
    steps = len(chain)
    settled = _tau(chain[steps // 2 :])
    walker_mean = log_prob.mean(axis=1)
    typical = np.percentile(walker_mean[steps // 2 :], 2.5)
    arrived = int(np.argmax(walker_mean >= typical))
    burn_in = max(min_burn_in, arrived)
    if math.isfinite(settled):
        burn_in = max(burn_in, math.ceil(BURN_IN_TAUS * settled))
    burn_in = min(burn_in, steps // 2)
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

    ``logp_many(points)`` gives the log-posterior (up to a constant) of each row of
    ``points``; ``value_and_grad(point)`` one value and its gradient."""

    def __init__(
        self,
        logp_many: Callable[[np.ndarray], np.ndarray],
        value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
        init: np.ndarray,
        sigma: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        preset: FitPreset,
        seed: int,
    ) -> None:
        self.logp_many = logp_many
        self.value_and_grad = value_and_grad
        self.init, self.sigma, self.lower, self.upper = init, sigma, lower, upper
        self.preset = preset
        self.seed = seed
        self.ndim = len(init)
        self.nwalkers = preset.walker_ratio * self.ndim

    def _evaluate(self, state: SamplerState, points: np.ndarray) -> np.ndarray:
        state.evaluations += len(points)
        return np.array(self.logp_many(points), dtype=float)

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
                state.optimum_logp = float(np.max(state.best_logl))
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
        state.optimum, state.optimum_logp = found.optimum, found.log_posterior
        state.optimiser = found.summary
        if len(found.path):
            state.path = np.vstack([state.path, found.path])
        state.phase = "laplace"

    def _laplace(self, state: SamplerState) -> None:
        """The Laplace approximation; the posterior when the preset asks for it and it
        exists, else where MCMC starts (a Laplace preset falls back on MCMC, saying why)."""
        state.covariance, problem = laplace_covariance(
            self.value_and_grad, state.optimum, self.sigma, self.lower, self.upper
        )
        state.gradients += 2 * self.ndim
        if self.preset.sampler == "laplace" and state.covariance is not None:
            if not state.optimiser.get("success", False):
                state.problem = f"the optimiser stopped early: {state.optimiser.get('message')}"
            state.converged = not state.problem
            state.phase = "done"
            return
        if self.preset.sampler == "laplace":
            state.fallback = problem
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng
        widths = self.sigma
        if state.covariance is not None:
            widths = np.maximum(np.sqrt(np.diag(state.covariance)), 1e-3 * self.sigma)
        self._start_mcmc(state, rng, widths)
        state.rng = rng.bit_generator.state

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
        """The log-posterior inside the bounds, -inf outside. Every point is evaluated, so
        that the compiled likelihood always sees batches of one shape (a new shape would
        compile it again)."""
        inside = np.all((points >= self.lower) & (points <= self.upper), axis=1)
        return np.where(inside, self.logp_many(np.clip(points, self.lower, self.upper)), -np.inf)

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
        # The last chunk is cut short: max_steps bounds a fallback's cost, to the step.
        chunk = min(p.chunk, p.max_steps - (len(state.chain) - 1))
        end = sampler.run_mcmc(start, chunk, progress=False)
        state.evaluations += chunk * self.nwalkers
        state.chain = np.concatenate([state.chain, sampler.get_chain()])
        state.log_prob = np.concatenate([state.log_prob, sampler.get_log_prob()])
        state.accepted = state.accepted + sampler.acceptance_fraction * chunk
        state.mcmc_random = _random_state_to_json(end.random_state)
        steps = len(state.chain) - 1
        if steps < p.min_steps:
            return
        found = assess_chain(
            state.chain[1:], state.log_prob[1:], p.burn_in, p.tau_factor, p.tau_rtol, p.chunk
        )
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
    log_posterior: float
    path: np.ndarray  # the best start's iterates, (k, ndim)
    gradients: int
    summary: dict[str, Any]


class _Counted:
    """-log p and its gradient in units of ``scale`` around ``origin``, counting calls."""

    def __init__(self, value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]]) -> None:
        self.value_and_grad = value_and_grad
        self.calls = 0

    def minimise(
        self,
        start_point: np.ndarray,
        origin: np.ndarray,
        scale: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        max_iterations: int,
        path: list[np.ndarray],
    ) -> tuple[np.ndarray, float, optimize.OptimizeResult]:
        def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
            self.calls += 1
            value, grad = self.value_and_grad(origin + z * scale)
            return -float(value), -np.asarray(grad, dtype=float) * scale

        bounds = np.transpose([(lower - origin) / scale, (upper - origin) / scale])
        result = optimize.minimize(
            objective,
            np.clip((start_point - origin) / scale, bounds[:, 0], bounds[:, 1]),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=lambda z: path.append(origin + z * scale),
            options={"maxiter": max_iterations, "maxcor": 30},
        )
        return np.clip(origin + result.x * scale, lower, upper), -float(result.fun), result


def optimise(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    starts: list[np.ndarray],
    origin: np.ndarray,
    scale: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    max_iterations: int,
) -> Optimum:
    """The highest log-posterior reached from any of ``starts`` within the bounds.

    L-BFGS-B first, in units of ``scale`` (prior widths). Posterior widths differ from
    those by up to 10^3 between parameters and are strongly correlated, which stalls it
    short of the peak; damped Newton steps with the full Hessian (Levenberg-Marquardt)
    then finish the climb until the expected gain is below NEWTON_TOL."""
    counted = _Counted(value_and_grad)
    runs = []
    for start_point in starts:
        path: list[np.ndarray] = []
        x, value, result = counted.minimise(
            start_point, origin, scale, lower, upper, max_iterations, path
        )
        runs.append((value, x, path, result))
    best_value, x, path, _ = max(runs, key=lambda run: run[0])
    iterations = sum(run[3].nit for run in runs)
    polished = _newton(counted, x, best_value, scale, lower, upper, path)
    return Optimum(
        optimum=polished.x,
        log_posterior=polished.value,
        path=np.array(path).reshape(-1, len(origin)),
        gradients=counted.calls,
        summary={
            "starts": len(runs),
            "iterations": int(iterations),
            "newton_steps": polished.steps,
            "success": polished.converged,
            "message": "converged"
            if polished.converged
            else f"stopped {polished.gain:.2g} in log p short of the peak",
            "log_posteriors": [run[0] for run in runs],
        },
    )


@dataclass
class _Polished:
    x: np.ndarray
    value: float
    steps: int
    gain: float  # the last expected gain in log p
    converged: bool


def _newton(
    counted: _Counted,
    x: np.ndarray,
    value: float,
    scale: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    path: list[np.ndarray],
) -> _Polished:
    """Levenberg-Marquardt ascent in the free parameters (not held at a bound by an
    outward gradient), the Hessian scaled to unit diagonal; a rejected step raises the
    damping tenfold, an accepted one lowers it."""
    damping, gain = 1e-3, math.inf
    for step in range(NEWTON_STEPS):
        grad = np.asarray(counted.value_and_grad(x)[1], dtype=float)
        counted.calls += 1
        held = ((x <= lower + PINNED * (upper - lower)) & (grad < 0)) | (
            (x >= upper - PINNED * (upper - lower)) & (grad > 0)
        )
        free = np.flatnonzero(~held)
        if not len(free):
            return _Polished(x, value, step, 0.0, True)
        hessian = _hessian(counted, x, scale, free)
        diag = np.sqrt(np.abs(np.diag(hessian)))
        diag[diag == 0] = 1.0
        scaled, g = hessian / np.outer(diag, diag), grad[free] / diag
        if not np.all(np.isfinite(scaled)):
            break
        eigenvalues, eigenvectors = np.linalg.eigh(scaled)
        lowest = float(eigenvalues[0])
        if lowest < 0 and gain < NEWTON_TOL:
            # A saddle: no gradient to follow, but log p rises along the negative curvature.
            escaped = _escape(counted, x, value, eigenvectors[:, 0] / diag, free, lower, upper)
            if escaped is not None:
                x, value = escaped
                path.append(x)
                gain = math.inf
                continue
        while damping < 1e8:
            shift = max(damping, -lowest + damping)
            delta = np.linalg.solve(scaled + shift * np.eye(len(free)), g)
            gain = float(g @ delta) / 2
            trial = x.copy()
            trial[free] = np.clip(x[free] + delta / diag, lower[free], upper[free])
            trial_value = float(counted.value_and_grad(trial)[0])
            counted.calls += 1
            if trial_value > value:
                x, value = trial, trial_value
                path.append(x)
                damping = max(damping / 10, 1e-6)
                break
            damping *= 10
        if lowest > 0 and gain < NEWTON_TOL:
            return _Polished(x, value, step + 1, gain, True)
        if damping >= 1e8:
            break
    return _Polished(x, value, NEWTON_STEPS, gain, False)


def _escape(
    counted: _Counted,
    x: np.ndarray,
    value: float,
    direction: np.ndarray,
    free: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[np.ndarray, float] | None:
    """The best point along ``direction`` (in the free parameters; unit length in
    posterior widths) at up to 4 widths either way, if it is better than ``x``."""
    best = None
    for length in (0.25, 0.5, 1.0, 2.0, 4.0, -0.25, -0.5, -1.0, -2.0, -4.0):
        trial = x.copy()
        trial[free] = np.clip(x[free] + length * direction, lower[free], upper[free])
        trial_value = float(counted.value_and_grad(trial)[0])
        counted.calls += 1
        if trial_value > value:
            best, value = (trial, trial_value), trial_value
    return best


def _hessian(counted: _Counted, x: np.ndarray, scale: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The Hessian of -log p in the ``free`` parameters, by central differences of the exact
    gradient (steps of HESSIAN_STEP x ``scale``), symmetrised."""
    step = HESSIAN_STEP * scale
    columns = []
    for d in free:
        offset = np.zeros(len(x))
        offset[d] = step[d]
        plus = np.asarray(counted.value_and_grad(x + offset)[1])[free]
        minus = np.asarray(counted.value_and_grad(x - offset)[1])[free]
        columns.append((plus - minus) / (2 * step[d]))
    counted.calls += 2 * len(free)
    hessian = -np.array(columns).reshape(len(free), len(free))
    return (hessian + hessian.T) / 2


def laplace_covariance(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    scale: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[np.ndarray | None, str]:
    """The inverse Hessian of -log p at ``x0``, or None and why when -log p is not peaked
    there. Parameters pinned at a bound get no variance: the optimum is the bound, not a
    peak (the fit flags them)."""
    pinned = np.minimum(x0 - lower, upper - x0) <= PINNED * (upper - lower)
    free = np.flatnonzero(~pinned)
    hessian = _hessian(_Counted(value_and_grad), x0, scale, free)
    # Scaled to unit diagonal, so that parameters of very different widths do not make a
    # well-determined matrix look singular.
    diag = np.sqrt(np.abs(np.diag(hessian)))
    diag[diag == 0] = 1.0
    scaled = hessian / np.outer(diag, diag)
    if not np.all(np.isfinite(scaled)):
        return None, "the log-posterior's Hessian at the optimum is not finite"
    eigenvalues = np.linalg.eigvalsh(scaled)
    if eigenvalues.min() <= 1e-10 * eigenvalues.max():
        return (
            None,
            "the log-posterior is not peaked at the optimum (Hessian not negative definite)",
        )
    covariance = np.zeros((len(x0), len(x0)))
    covariance[np.ix_(free, free)] = np.linalg.inv(scaled) / np.outer(diag, diag)
    return covariance, ""


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
