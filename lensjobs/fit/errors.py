"""The errors a fit reports: statistical (the posterior's 16-84 % half-width) and
systematic (calibrated on simulations that break the fitted model the way real lenses
do), added in quadrature into the total that people use.

Per lens parameter the total is ``sqrt((k * stat)^2 + f^2)``: an inflation ``k`` of the
statistical error (the likelihood takes pixels as independent, and resampled coadds' are
not), and a floor ``f`` in the parameter's units for what the model cannot describe (on
model-breaking simulations theta_E's error is 0.05-0.1" whatever theta_E: a floor in arcsec,
not a fraction). The systematic part is what this adds to the statistical one.
The terms live in ``systematics.json`` beside this file, with how they were calibrated:
``benchmarks/coverage.py --calibrate`` finds, per lens parameter, the terms that put 68.3 %
of the truths within 1 total sigma and 95.4 % within 2 on one set of model-breaking
simulations, and the coverage table in BENCHMARKS.md checks them on others.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

SYSTEMATICS = Path(__file__).with_name("systematics.json")


@cache
def calibration(path: Path = SYSTEMATICS) -> dict[str, Any]:
    """``{"calibration": {...provenance...}, "terms": {name: {"inflation": k, "floor": f}}}``
    (a parameter left out has k = 1, f = 0)."""
    return json.loads(path.read_text())


def systematic(name: str, statistical: float, terms: dict[str, dict[str, float]]) -> float:
    """The error added to the statistical one (in quadrature) by the calibrated terms."""
    t = terms.get(name, {})
    return math.sqrt((t.get("inflation", 1.0) ** 2 - 1) * statistical**2 + t.get("floor", 0.0) ** 2)


def error_budget(
    summaries: dict[str, dict[str, float]], names: tuple[str, ...], terms: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """``{name: {statistical, systematic, total}}`` for ``names``."""
    budget = {}
    for name in names:
        s = summaries[name]
        statistical = (s["p84"] - s["p16"]) / 2
        sys_ = systematic(name, statistical, terms)
        budget[name] = {
            "statistical": statistical,
            "systematic": sys_,
            "total": math.hypot(statistical, sys_),
        }
    return budget
