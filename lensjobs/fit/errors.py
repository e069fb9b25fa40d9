"""The errors a fit reports: statistical (the posterior's 16-84 % half-width) and
systematic (a floor calibrated on simulations that break the fitted model the way real
lenses do), added in quadrature into the total that people use.

The floors live in ``systematics.json`` beside this file, with how they were calibrated:
``benchmarks/coverage.py --calibrate`` finds, per lens parameter, the floor that puts 68 %
of the truths within 1 total sigma on one set of model-breaking simulations, and the
coverage table in BENCHMARKS.md checks it on others.
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
    """``{"calibration": {...provenance...}, "floors": {name: {"absolute": a,
    "relative": r}}}``: the systematic error of a parameter of value v is
    ``hypot(a, r * |v|)``."""
    return json.loads(path.read_text())


def systematic(name: str, value: float, floors: dict[str, dict[str, float]]) -> float:
    floor = floors.get(name, {})
    return math.hypot(floor.get("absolute", 0.0), floor.get("relative", 0.0) * abs(value))


def error_budget(
    summaries: dict[str, dict[str, float]], names: tuple[str, ...], floors: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """``{name: {statistical, systematic, total}}`` for ``names``."""
    budget = {}
    for name in names:
        s = summaries[name]
        statistical = (s["p84"] - s["p16"]) / 2
        sys_ = systematic(name, s["median"], floors)
        budget[name] = {
            "statistical": statistical,
            "systematic": sys_,
            "total": math.hypot(statistical, sys_),
        }
    return budget
