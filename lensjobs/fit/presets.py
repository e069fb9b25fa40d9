"""Fitting presets: how much PSO and MCMC a fit spends.

- ``seed``: the original notebooks' recipe, for comparison: PSO 500 particles x 500
  iterations, then emcee burn-in 400 and run 1000 steps with walker ratio 10 (~460,000
  likelihood evaluations).
- ``standard``: the default. A short PSO started from the network priors, then emcee that
  stops once the chain is long against its autocorrelation time (or at a step cap).
- ``quick``: for tests and CI.
- ``trivial``: testing only: fits nothing (in a batch, does not even read the input), so
  that workflow benchmarks (100,000 candidates on a personal pool) measure DAGMan and the
  schedd, not lenstronomy. ``submit`` refuses it unless ``LENSJOBS_TESTING=1`` is set, and
  no help text names it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class FitPreset(BaseModel):
    name: str
    pso_particles: int = Field(ge=2)
    pso_iterations: int = Field(ge=1)
    walker_ratio: int = Field(ge=2, description="emcee walkers per free parameter")
    burn_in: int = Field(ge=0, description="MCMC steps discarded (fixed recipe) or minimum")
    min_steps: int = Field(ge=1, description="MCMC steps after burn-in before stopping")
    max_steps: int = Field(ge=1, description="MCMC steps after burn-in at most")
    chunk: int = Field(50, ge=1, description="MCMC steps between convergence checks")
    converge: bool = Field(description="stop on convergence instead of after max_steps")
    tau_factor: float = Field(15.0, description="converged when post-burn-in steps > factor x tau")
    tau_rtol: float = Field(0.1, description="... and tau changed less than this since last check")
    moves: str = Field(
        "stretch",
        description="emcee moves: 'stretch' (emcee's default) or "
        "'de' (differential evolution, mixes faster on correlated posteriors)",
    )
    supersampling: int = 1
    median_cpu_seconds: float = Field(
        description="measured cost of one fit (BENCHMARKS.md); how long a fit job is expected "
        "to run, for HTCondor's job duration category"
    )
    testing_only: bool = False


PRESETS: dict[str, FitPreset] = {
    "seed": FitPreset(
        name="seed",
        pso_particles=500,
        pso_iterations=500,
        walker_ratio=10,
        burn_in=400,
        min_steps=1000,
        max_steps=1000,
        converge=False,
        median_cpu_seconds=464,
    ),
    "standard": FitPreset(
        name="standard",
        pso_particles=50,
        pso_iterations=50,
        walker_ratio=4,
        burn_in=100,
        min_steps=250,
        max_steps=500,
        converge=True,
        tau_factor=10.0,
        tau_rtol=0.2,
        moves="de",
        median_cpu_seconds=38,
    ),
    "quick": FitPreset(
        name="quick",
        pso_particles=30,
        pso_iterations=30,
        walker_ratio=2,
        burn_in=20,
        min_steps=40,
        max_steps=40,
        chunk=20,
        converge=False,
        median_cpu_seconds=5,
    ),
    "trivial": FitPreset(
        name="trivial",
        pso_particles=2,
        pso_iterations=1,
        walker_ratio=2,
        burn_in=0,
        min_steps=1,
        max_steps=1,
        converge=False,
        median_cpu_seconds=0.05,
        testing_only=True,
    ),
}
PUBLIC_PRESETS = [name for name, preset in PRESETS.items() if not preset.testing_only]
