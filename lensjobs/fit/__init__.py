"""The fit node: one candidate, lenstronomy PSO + MCMC."""
