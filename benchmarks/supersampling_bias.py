"""How finely must a fit sample each pixel? The bias of the best fit against the
supersampling factor, on noise-free systems rendered far finer.

    .venv/bin/python benchmarks/supersampling_bias.py --n 8 --render 16 --factors 1,2,3,4

Systems the fitted model describes exactly (SIE + shear, Sersic light and source, Gaussian
PSF, no interlopers), rendered at ``--render`` x ``--render`` sub-pixels without noise. For
each fit factor: L-BFGS-B from the truth to the best fit, the Laplace width at the best fit
(the statistical error the same system would have with its noise), and the bias
best - truth in units of that width, per lens parameter; log p(best) - log p(truth); and
the cost of one likelihood evaluation and of one gradient. Numerics are accurate enough
when the biases are well below 1 sigma.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lensjobs.fit.inputs import Candidate
from lensjobs.fit.model import LENS_PARAMETERS, start, truth_vector
from lensjobs.fit.node import Problem
from lensjobs.fit.presets import PRESETS
from lensjobs.fit.sampling import laplace_covariance, optimise
from lensjobs.simulate import SimulationSettings, simulate_system


def candidate_with_true_priors(seed: int, settings: SimulationSettings) -> tuple[Candidate, dict]:
    system = simulate_system(np.random.SeedSequence(seed), settings)
    t = system.truth
    prior = {
        **{c: t[c] for c in ("THETA_E", "CENTER_X", "CENTER_Y", "E1", "E2")},
        "THETA_E_ERR": 0.1,
        "CENTER_X_ERR": 0.05,
        "CENTER_Y_ERR": 0.05,
        "E1_ERR": 0.1,
        "E2_ERR": 0.1,
        **{f"BKG_RMS_{b}": t[f"NOISE_{b}"] for b in "GRI"},
    }
    fwhm = np.array([t[f"FWHM_{b}"] for b in "GRI"])
    candidate = Candidate(
        f"sim{seed}", system.images, fwhm, settings.pixscale, settings.magzero, prior, system.labels
    )
    return candidate, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=21, help="first system's seed")
    parser.add_argument("--render", type=int, default=16, help="sub-pixels of the simulation")
    parser.add_argument("--factors", default="1,2,3,4")
    args = parser.parse_args()
    settings = SimulationSettings(
        nonlens_frac=0.0,
        max_interlopers=0,
        shear_frac=1.0,
        supersampling=args.render,
        noiseless=True,
    )
    systems = [candidate_with_true_priors(args.seed + k, settings) for k in range(args.n)]
    names = list(LENS_PARAMETERS)
    print(f"{args.n} noise-free systems rendered at {args.render}x{args.render} sub-pixels")
    header = "factor | " + " | ".join(f"{n} median/max" for n in names)
    print(header + " | dlogL median/max | ms per logL | ms per gradient")
    for factor in map(int, args.factors.split(",")):
        preset = PRESETS["standard"].model_copy(update={"supersampling": factor})
        pulls, dlogl, cost_value, cost_grad = [], [], [], []
        for candidate, truth in systems:
            problem = Problem(candidate, preset)
            x_true = truth_vector(truth)
            s = start(candidate)
            found = optimise(
                problem.value_and_grad, [x_true], s.init, s.sigma, s.lower, s.upper, 2000
            )
            covariance, why = laplace_covariance(
                problem.value_and_grad, found.optimum, s.sigma, s.lower, s.upper
            )
            if covariance is None:
                print(f"  {candidate.id}: {why}")
                continue
            sigma = np.sqrt(np.diag(covariance))
            idx = [problem.names.index(n) for n in names]
            pulls.append(((found.optimum - x_true) / sigma)[idx])
            dlogl.append(found.log_posterior - problem.value_and_grad(x_true)[0])
            problem.log_likelihood(x_true)  # compiles: not part of the cost
            t0 = time.process_time()
            for _ in range(20):
                problem.log_likelihood(x_true)
            cost_value.append((time.process_time() - t0) / 20)
            t0 = time.process_time()
            for _ in range(20):
                problem.value_and_grad(x_true)
            cost_grad.append((time.process_time() - t0) / 20)
        a = np.abs(np.array(pulls))
        cells = " | ".join(
            f"{np.median(a[:, k]):.2f} / {np.max(a[:, k]):.2f}" for k in range(len(names))
        )
        print(
            f"{factor} | {cells} | {np.median(dlogl):.1f} / {np.max(dlogl):.1f} | "
            f"{1e3 * np.median(cost_value):.2f} | {1e3 * np.median(cost_grad):.2f}"
        )


if __name__ == "__main__":
    main()
