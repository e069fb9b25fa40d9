"""Why did a fit miss theta_E: the search, or the model?

    .venv/bin/python benchmarks/failures.py runs/final/breaking-16-100

For a set that benchmarks/coverage.py simulated and fitted (its directory), every lens whose
fitted theta_E is off by more than ``--threshold`` of the truth is optimised again, from
the fit's best point with the lens parameters (theta_E, e1, e2, shear, centre) set to
their true values. If that climb ends higher in log-posterior than the fit did, the fit
missed a better peak near the truth: a search failure (more starts, a wider swarm would
help). If it ends lower, or back at the fit's optimum, the model's best description of
the data lies away from the truth: a model failure (no search helps; a better model or
honest errors do).

It also counts the fits (all of them, not just the failures) that left a source or lens-
light parameter at a prior bound, and theta_E's accuracy with and without one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.table import Table
from common import theta_figures

from lensjobs.fit.inputs import read_candidate
from lensjobs.fit.likelihood import NAMES
from lensjobs.fit.model import LENS_PARAMETERS
from lensjobs.fit.node import Problem
from lensjobs.fit.presets import PRESETS
from lensjobs.fit.sampling import optimise
from lensjobs.simulate import TRUTH_PARAMETERS

# A climb from the truth that ends more than this above the fit's log p found a better
# peak; within it either way, the same one.
SAME_PEAK = 1.0


def fitted(directory: Path, preset: str) -> list[tuple[dict, Table.Row]]:
    """(params.json, truth row) of every lens the fit gave parameters."""
    truth = Table.read(directory / "candidates.fits", hdu="TRUTH")
    pairs = []
    for row in truth:
        params = json.loads(
            (directory / preset / row["COADD_OBJECT_ID"] / "params.json").read_text()
        )
        if "parameters" in params:
            pairs.append((params, row))
    return pairs


def theta_error(params: dict, row: Table.Row) -> float:
    return params["parameters"]["theta_E_lens0"]["median"] / float(row["THETA_E"]) - 1


def climb_from_truth(directory: Path, preset: str, params: dict, row: Table.Row) -> tuple:
    """The fit's log-posterior at its best point, and the optimum (theta_E, log p) reached
    from that point with the lens parameters set to the truth."""
    cid = row["COADD_OBJECT_ID"]
    problem = Problem(read_candidate(directory / "nodes" / cid / "input.fits"), PRESETS[preset])
    s = problem.start
    best = np.array([params["parameters"][n]["best"] for n in NAMES])
    start = best.copy()
    for name in LENS_PARAMETERS:
        start[NAMES.index(name)] = float(row[TRUTH_PARAMETERS[name]])
    start = np.clip(start, s.lower, s.upper)
    found = optimise(
        problem.value_and_grad,
        [start],
        s.init,
        s.sigma,
        s.lower,
        s.upper,
        PRESETS[preset].optimiser_iterations,
    )
    fit_logp = problem.value_and_grad(best)[0]
    return fit_logp, float(found.optimum[NAMES.index("theta_E_lens0")]), found.log_posterior


def bounded(params: dict) -> list[str]:
    """The source and lens-light parameters the fit left at a prior bound (its warnings
    name no others: a lens parameter at a bound flags the fit AT_BOUND)."""
    return [w.split()[0] for w in params["warnings"] if w.endswith("at its bound")]


def accuracy(errors: list[float]) -> str:
    a = theta_figures(errors)
    return (
        f"{len(errors)} fits: median {100 * a['median']:.1f} %, "
        f"within 10 % {100 * a['within10']:.0f} %, beyond 20 % {100 * a['beyond20']:.0f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path, help="a set of benchmarks/coverage.py")
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--threshold", type=float, default=0.1, help="|dtheta_E|/theta_E")
    args = parser.parse_args()
    pairs = fitted(args.directory, args.preset)
    print(f"{args.directory.name}: {len(pairs)} fits; theta_E off by > {args.threshold:.0%}:\n")
    print(
        "| lens | flag | true theta_E | best fit (median's error) | from the truth "
        "| gain in log p | verdict |"
    )
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for params, row in pairs:
        error = theta_error(params, row)
        if abs(error) <= args.threshold:
            continue
        fit_logp, theta, logp = climb_from_truth(args.directory, args.preset, params, row)
        gain = logp - fit_logp
        fitted_theta = params["parameters"]["theta_E_lens0"]["best"]
        if gain > SAME_PEAK:
            verdict = "search"
        elif gain > -SAME_PEAK:
            verdict = "model (back to the fit's optimum)"
        else:
            verdict = "model (a worse peak)"
        verdicts.append(verdict)
        true = float(row["THETA_E"])
        print(
            f"| {row['COADD_OBJECT_ID']} | {params['flag']} | {true:.3f}″ | {fitted_theta:.3f}″ "
            f"({error:+.0%}) | {theta:.3f}″ | {gain:+.1f} | {verdict} |",
            flush=True,
        )
    print(
        f"\n{len(verdicts)} failures: "
        + ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts)))
    )
    at_bound = [theta_error(p, r) for p, r in pairs if bounded(p)]
    free = [theta_error(p, r) for p, r in pairs if not bounded(p)]
    print(f"a source or lens-light parameter at a bound: {accuracy(at_bound)}")
    print(f"none at a bound: {accuracy(free)}")


if __name__ == "__main__":
    main()
