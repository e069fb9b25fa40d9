"""The samplers on posteriors whose answers are known: Gaussians and AR(1) chains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lensjobs.fit.node import at_bound
from lensjobs.fit.presets import PRESETS
from lensjobs.fit.sampling import Sampler, assess_chain, laplace_covariance, posterior

MEAN = np.array([1.0, -2.0, 0.5])
COVARIANCE = np.array([[0.04, 0.018, 0.0], [0.018, 0.09, -0.02], [0.0, -0.02, 0.01]])
PRECISION = np.linalg.inv(COVARIANCE)


def gaussian_many(points: np.ndarray) -> np.ndarray:
    d = np.atleast_2d(points) - MEAN
    return -0.5 * np.einsum("ni,ij,nj->n", d, PRECISION, d)


def gaussian_value_and_grad(point: np.ndarray) -> tuple[float, np.ndarray]:
    return float(gaussian_many(point)[0]), -PRECISION @ (point - MEAN)


def run(preset_name: str, **update: object) -> tuple[Sampler, object]:
    preset = PRESETS[preset_name].model_copy(update={"pso_particles": 20, **update})
    sigma = np.sqrt(np.diag(COVARIANCE)) * 3
    sampler = Sampler(
        gaussian_many,
        gaussian_value_and_grad,
        MEAN + sigma,  # start 3 sigma off
        sigma,
        MEAN - 20 * sigma,
        MEAN + 20 * sigma,
        preset,
        seed=3,
    )
    state = sampler.start()
    assert sampler.run(state, lambda: False)
    return sampler, state


def test_laplace_is_exact_on_a_gaussian() -> None:
    _, state = run("standard")
    assert state.converged and state.chain is None
    np.testing.assert_allclose(state.optimum, MEAN, atol=1e-4)
    np.testing.assert_allclose(state.covariance, COVARIANCE, rtol=1e-3, atol=1e-6)


def test_mcmc_converges_on_a_gaussian_and_recovers_it() -> None:
    sampler, state = run("mcmc")
    assert state.converged, state.problem
    samples = posterior(state, sampler.preset, 0, 0)
    assert state.burn_in >= sampler.preset.burn_in
    assert len(state.chain) - 1 - state.burn_in >= sampler.preset.tau_factor * state.tau
    # Within 4 standard errors, for the chain's effective number of independent samples.
    effective = len(samples) / state.tau
    sd = np.sqrt(np.diag(COVARIANCE))
    assert np.all(np.abs(samples.mean(axis=0) - MEAN) < 4 * sd / np.sqrt(effective))
    np.testing.assert_allclose(np.sqrt(np.diag(np.cov(samples.T))), sd, rtol=4 / np.sqrt(effective))
    assert np.corrcoef(samples.T)[0, 1] == pytest.approx(0.3, abs=4 / np.sqrt(effective))


def test_the_notebooks_recipe_can_report_a_converged_chain() -> None:
    """seed checks convergence once, at its last step: a chain long against its
    autocorrelation time is converged (it once compared against infinity and never was)."""
    sampler, state = run("seed", pso_iterations=20, walker_ratio=10)
    assert sampler.preset.min_steps == sampler.preset.max_steps == 1400
    assert len(state.chain) - 1 == 1400
    assert state.converged, state.problem
    assert state.burn_in >= 400


def test_a_short_chain_is_not_converged_and_says_why() -> None:
    _, state = run("mcmc", min_steps=100, max_steps=120, chunk=50, optimise=False)
    assert not state.converged
    assert len(state.chain) - 1 == 120  # not the next multiple of the chunk
    assert state.problem.startswith("MCMC stopped at 120 steps, autocorrelation time")


def ar1_chains(rho: float, steps: int, walkers: int, seed: int = 0) -> np.ndarray:
    """Walkers of an AR(1) process of unit variance: autocorrelation time (1+rho)/(1-rho)."""
    rng = np.random.default_rng(seed)
    chain = np.empty((steps, walkers, 1))
    x = rng.normal(size=walkers)
    for t in range(steps):
        x = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=walkers)
        chain[t, :, 0] = x
    return chain


def log_p(chain: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(chain**2, axis=2)


def test_autocorrelation_time_and_burn_in_of_known_chains() -> None:
    rho = 0.9
    tau = (1 + rho) / (1 - rho)  # 19 steps
    chain = ar1_chains(rho, 4000, 32)
    found = assess_chain(
        chain, log_p(chain), min_burn_in=10, tau_factor=50, tau_rtol=0.1, chunk=100
    )
    assert found.tau == pytest.approx(tau, rel=0.2)
    assert found.burn_in == pytest.approx(3 * tau, rel=0.25)
    assert found.converged
    # A chain that starts far away and drifts in: the burn-in covers the drift.
    drifting = chain.copy()
    drifting[:300, :, 0] += np.linspace(50, 0, 300)[:, None]
    assert assess_chain(drifting, log_p(drifting), 10, 50, 0.1, 100).burn_in >= 280
    # Too short against its autocorrelation time: not converged.
    assert not assess_chain(chain[:400], log_p(chain[:400]), 10, 50, 0.1, 100).converged


def test_a_parameter_that_never_moves_is_not_converged() -> None:
    chain = ar1_chains(0.5, 2000, 16)
    stuck = np.concatenate([chain, np.ones_like(chain)], axis=2)
    found = assess_chain(stuck, log_p(chain), 10, 50, 0.1, 100)
    assert math.isinf(found.tau) and not found.converged


def test_laplace_gives_no_variance_to_a_parameter_pinned_at_its_bound() -> None:
    lower = MEAN - 1.0
    lower[2] = MEAN[2] + 0.05  # the peak lies below the bound
    x0 = MEAN.copy()
    x0[2] = lower[2]
    covariance, problem = laplace_covariance(
        gaussian_value_and_grad, x0, np.ones(3), lower, MEAN + 1.0
    )
    assert problem == "" and covariance[2, 2] == 0
    conditional = np.linalg.inv(PRECISION[:2, :2])
    np.testing.assert_allclose(covariance[:2, :2], conditional, rtol=1e-4)


def test_at_bound_when_the_interval_reaches_a_bound() -> None:
    lower, upper = np.zeros(2), np.ones(2)
    names = ["a", "b"]

    def summary(p16: float, p84: float) -> dict[str, float]:
        return {"p16": p16, "p84": p84, "median": (p16 + p84) / 2}

    inside = {"a": summary(0.4, 0.6), "b": summary(0.1, 0.9)}
    assert at_bound(inside, lower, upper, names) == []
    piled = {"a": summary(0.4, 0.6), "b": summary(0.95, 1.0)}
    assert at_bound(piled, lower, upper, names) == ["b"]
    past = {"a": summary(-0.1, 0.2), "b": summary(0.3, 0.5)}
    assert at_bound(past, lower, upper, names) == ["a"]
