"""The fit of one candidate, or a batch: the lens model, its likelihood (JAX), the optimiser
and samplers, the error budget, the outputs."""
