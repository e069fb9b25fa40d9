"""PSO then emcee, resumable from a checkpoint at any step boundary.

Everything a sampler needs to go on (swarm, chain, the random generators' states, counts
and time spent) lives in :class:`SamplerState`, saved as a ``.npz`` of plain arrays plus
JSON (never pickles). Because random states are restored exactly and the MCMC always
advances in fixed-size chunks, a fit interrupted and resumed any number of times gives
the same samples as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import emcee
import numpy as np

from lensjobs.files import atomic_write
from lensjobs.fit.presets import FitPreset

# We report the autocorrelation time ourselves; emcee's warning about short chains is noise.
logging.getLogger("emcee.autocorr").setLevel(logging.ERROR)
# Clerc & Kennedy (2002) constriction coefficients.
PSO_INERTIA, PSO_COGNITIVE, PSO_SOCIAL = 0.7298, 1.49618, 1.49618
WALKER_SPREAD = 0.1
MOVES = {
    "stretch": lambda: None,  # emcee's default StretchMove
    "de": lambda: [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)],
}  # walkers start within this fraction of the prior widths of the PSO best


@dataclass
class SamplerState:
    phase: str = "pso"  # pso -> mcmc -> done
    rng: dict[str, Any] = field(default_factory=dict)
    iteration: int = 0
    position: np.ndarray | None = None
    velocity: np.ndarray | None = None
    best_position: np.ndarray | None = None
    best_logl: np.ndarray | None = None
    chain: np.ndarray | None = None  # (steps, walkers, ndim)
    log_prob: np.ndarray | None = None  # (steps, walkers)
    accepted: np.ndarray | None = None  # (walkers,)
    mcmc_random: dict[str, Any] = field(default_factory=dict)
    tau: list[float] = field(default_factory=list)
    converged: bool = False
    evaluations: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    restarts: int = 0

    ARRAYS = ("position", "velocity", "best_position", "best_logl", "chain", "log_prob", "accepted")

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
    """Runs one fit's PSO and MCMC, checkpointing when asked to stop."""

    def __init__(
        self,
        log_likelihood: Callable[[np.ndarray], float],
        init: np.ndarray,
        sigma: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        preset: FitPreset,
        seed: int,
    ) -> None:
        self.logl = log_likelihood
        self.init, self.sigma, self.lower, self.upper = init, sigma, lower, upper
        self.preset = preset
        self.seed = seed
        self.ndim = len(init)
        self.nwalkers = preset.walker_ratio * self.ndim

    def _evaluate(self, state: SamplerState, points: np.ndarray) -> np.ndarray:
        state.evaluations += len(points)
        return np.array([self.logl(p) for p in points])

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
        state.rng = rng.bit_generator.state
        return state

    def run(self, state: SamplerState, should_stop: Callable[[], bool]) -> bool:
        """Advance ``state``; True when finished, False when ``should_stop`` asked to pause
        (checked after every PSO iteration and MCMC chunk, so each run makes progress)."""
        while state.phase != "done":
            if state.phase == "pso":
                self._pso_step(state)
            else:
                self._mcmc_chunk(state)
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
        state.iteration += 1
        if state.iteration >= self.preset.pso_iterations:
            self._start_mcmc(state, rng)
        state.rng = rng.bit_generator.state

    def _start_mcmc(self, state: SamplerState, rng: np.random.Generator) -> None:
        best = state.best_position[np.argmax(state.best_logl)]
        walkers = best + rng.normal(size=(self.nwalkers, self.ndim)) * self.sigma * WALKER_SPREAD
        walkers = np.clip(walkers, self.lower, self.upper)
        walkers[0] = best
        state.chain = walkers[None]
        state.log_prob = self._evaluate(state, walkers)[None]
        state.accepted = np.zeros(self.nwalkers)
        state.mcmc_random = _random_state_to_json(
            np.random.RandomState(int(rng.integers(2**31))).get_state()
        )
        state.phase = "mcmc"

    def _mcmc_chunk(self, state: SamplerState) -> None:
        sampler = emcee.EnsembleSampler(
            self.nwalkers, self.ndim, self.logl, moves=MOVES[self.preset.moves]()
        )
        start = emcee.State(
            state.chain[-1],
            log_prob=state.log_prob[-1],
            random_state=_random_state_from_json(state.mcmc_random),
        )
        end = sampler.run_mcmc(start, self.preset.chunk, progress=False)
        state.evaluations += self.preset.chunk * self.nwalkers
        state.chain = np.concatenate([state.chain, sampler.get_chain()])
        state.log_prob = np.concatenate([state.log_prob, sampler.get_log_prob()])
        state.accepted = state.accepted + sampler.acceptance_fraction * self.preset.chunk
        state.mcmc_random = _random_state_to_json(end.random_state)
        self._check_convergence(state)

    def _check_convergence(self, state: SamplerState) -> None:
        p = self.preset
        post = len(state.chain) - 1 - p.burn_in
        if post < p.min_steps:
            return
        tau = float(
            np.max(emcee.autocorr.integrated_time(state.chain[1 + p.burn_in :], quiet=True))
        )
        previous = state.tau[-1] if state.tau else np.inf
        state.tau.append(tau)
        state.converged = post >= p.tau_factor * tau and abs(tau - previous) < p.tau_rtol * tau
        if (p.converge and state.converged) or post >= p.max_steps:
            state.phase = "done"


def posterior(state: SamplerState, preset: FitPreset) -> np.ndarray:
    """Post-burn-in samples, flattened ``(steps * walkers, ndim)``."""
    return state.chain[1 + preset.burn_in :].reshape(-1, state.chain.shape[-1])


class Clock:
    """CPU and wall seconds of this process, added to what earlier runs spent."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.time()

    def charge(self, state: SamplerState) -> None:
        cpu, wall = time.process_time(), time.time()
        state.cpu_seconds += cpu - self.cpu
        state.wall_seconds += wall - self.wall
        self.cpu, self.wall = cpu, wall
