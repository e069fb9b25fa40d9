"""Fitting presets: how a fit finds the optimum and measures the posterior.

- ``standard``: the default. A short particle swarm from the network priors, L-BFGS-B with
  exact gradients from its best points, and the posterior as a Gaussian around the
  optimum (the Laplace approximation; benchmarks/coverage.py checks it against ``mcmc``).
- ``mcmc``: ``standard``'s optimum, then emcee until the chain has converged: for
  validating the Laplace approximation, and for candidates whose posterior is not Gaussian.
- ``seed``: the original notebooks' recipe, for comparison: PSO 500 particles x 500
  iterations, then emcee for 1,400 steps with walker ratio 10 (~460,000 likelihood
  evaluations), discarding a burn-in of at least the notebooks' 400 steps.
- ``quick``: for tests and CI: ``standard`` with a smaller swarm.
- ``trivial``: testing only: fits nothing (in a batch, does not even read the input), so
  that workflow benchmarks (100,000 candidates on a personal pool) measure DAGMan and the
  schedd, not a fit. ``submit`` refuses it unless ``LENSJOBS_TESTING=1`` is set, and no
  help text names it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class FitPreset(BaseModel):
    name: str
    pso_particles: int = Field(ge=2)
    pso_iterations: int = Field(ge=1)
    optimise: bool = Field(True, description="L-BFGS-B from the swarm's best points")
    optimiser_iterations: int = Field(500, ge=1)
    sampler: Literal["laplace", "mcmc"] = "laplace"
    posterior_draws: int = Field(4000, ge=1, description="Laplace: samples drawn for plots")
    walker_ratio: int = Field(2, ge=2, description="emcee walkers per free parameter")
    # MCMC: the sampler of "mcmc" presets, and where a Laplace preset falls back when the
    # log-likelihood is not peaked at its optimum.
    burn_in: int = Field(100, ge=0, description="MCMC steps discarded at least")
    min_steps: int = Field(200, ge=1, description="MCMC steps before convergence is checked")
    # 200 keeps a fallback within issue 15's 60 CPU-s a fit. With the knot, 48 walkers x 500
    # steps took 72-85 s and x 300 up to 68.4 s (the first fit of a batch process, compiling),
    # every chain unconverged at the end.
    max_steps: int = Field(200, ge=1, description="MCMC steps at most")
    chunk: int = Field(100, ge=1, description="MCMC steps between convergence checks")
    converge: bool = Field(True, description="stop on convergence instead of at max_steps")
    tau_factor: float = Field(
        20.0,
        description="converged when post-burn-in steps > factor x tau (every walker then "
        "holds 20 independent samples; the ensemble, walkers x 20)",
    )
    tau_rtol: float = Field(0.1, description="... and tau moved less than this over a chunk")
    moves: str = Field(
        "de",
        description="emcee moves: 'stretch' (emcee's default) or "
        "'de' (differential evolution, mixes faster on correlated posteriors)",
    )
    supersampling: int = Field(3, ge=1, description="sub-pixels per pixel side (fit/likelihood)")
    mean_cpu_seconds: float = Field(
        description="measured mean CPU cost of one fit (BENCHMARKS.md); how long a fit job is "
        "expected to run (fits per job, HTCondor's job duration category)"
    )
    testing_only: bool = False

    @model_validator(mode="after")
    def _stops(self) -> FitPreset:
        # Convergence is checked from min_steps on, and a chain stops only when checked.
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps {self.max_steps} < min_steps {self.min_steps}")
        return self


PRESETS: dict[str, FitPreset] = {
    "standard": FitPreset(
        name="standard",
        pso_particles=40,
        pso_iterations=40,
        mean_cpu_seconds=14,  # model-breaking seeds 12, 16: whole process (BENCHMARKS.md)
    ),
    "mcmc": FitPreset(
        name="mcmc",
        pso_particles=40,
        pso_iterations=40,
        sampler="mcmc",
        walker_ratio=4,
        min_steps=500,
        max_steps=10000,
        mean_cpu_seconds=300,
    ),
    "seed": FitPreset(
        name="seed",
        pso_particles=500,
        pso_iterations=500,
        optimise=False,
        sampler="mcmc",
        walker_ratio=10,
        burn_in=400,
        min_steps=1400,
        max_steps=1400,
        chunk=50,
        converge=False,
        moves="stretch",
        mean_cpu_seconds=915,  # 10 model-breaking lenses of seed 14 (BENCHMARKS.md)
    ),
    "quick": FitPreset(
        name="quick",
        pso_particles=20,
        pso_iterations=20,
        mean_cpu_seconds=7,
    ),
    "trivial": FitPreset(
        name="trivial",
        pso_particles=2,
        pso_iterations=1,
        mean_cpu_seconds=0.05,
        testing_only=True,
    ),
}
PUBLIC_PRESETS = [name for name, preset in PRESETS.items() if not preset.testing_only]
