"""Read a run directory into one :class:`Entry` per catalogue row: what became of each
candidate (status, flag, reason) and, for finished fits, its params.json.

Statuses: ``DONE`` (a finished node: OK, POOR_FIT, AT_BOUND, NOT_CONVERGED with parameters, or
NO_ARCS without), ``FAILED`` (the node said why it cannot fit), ``MISSING`` (no params.json:
the node did not finish), ``SKIPPED`` (an unusable cutout: no fit node was made). Nothing
here raises on a partial run; a damaged file becomes a reason.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.table import Table

from lensjobs.catalog import SAFE_ID, open_catalog

FITTED = ("OK", "POOR_FIT", "AT_BOUND", "NOT_CONVERGED")  # finished fits with parameters
FLAGS = (*FITTED, "NO_ARCS", "FAILED")
STATUSES = ("DONE", "FAILED", "MISSING", "SKIPPED")
NO_OUTPUT = "no fit output (its fit job did not finish)"
NO_INFERENCE = "inference did not finish"
# Results columns -> params.json names; the lens centre is a free parameter of the lens
# light (joined to the mass).
ESTIMATES = {
    "THETA_E": "theta_E_lens0",
    "CENTER_X": "center_x_lens_light0",
    "CENTER_Y": "center_y_lens_light0",
    "E1": "e1_lens0",
    "E2": "e2_lens0",
    "GAMMA1": "gamma1_lens1",
    "GAMMA2": "gamma2_lens1",
}
# What the job wrappers (jobs/) add to a node's stderr after the node's own last words.
_WRAPPER_LINES = (
    re.compile(r"fits_\S+ exit (-?\d+)"),
    re.compile(r"lensjobs node \S+ ended with exit code .*"),
)
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x1f\x7f]")


@dataclass
class Entry:
    """One catalogue row and what became of it."""

    row: int
    id: str
    status: str
    flag: str = ""  # "" when there is no params.json to say
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """The flag, or the status where there is none: one word per candidate."""
        return self.flag or self.status

    @property
    def fitted(self) -> bool:
        return self.status == "DONE" and self.flag in FITTED

    def estimate(self, column: str) -> tuple[float, float]:
        """Median and total error (statistical + systematic) of a results column; NaN when
        absent."""
        median = self.number("parameters", ESTIMATES[column], "median")
        return median, self.number("errors", ESTIMATES[column], "total")

    def error_parts(self, column: str) -> tuple[float, float]:
        """The statistical and the systematic part of a results column's error."""
        name = ESTIMATES[column]
        return self.number("errors", name, "statistical"), self.number("errors", name, "systematic")

    def number(self, *keys: str) -> float:
        """A number in params.json (``number("reduced_chi2", "joint")``); NaN when absent."""
        value: Any = self.params
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan


@dataclass
class RunInfo:
    """run.json, with fallbacks so that a damaged one still gives a summary."""

    name: str
    created: str
    input_path: str
    preset: str

    @property
    def mtime(self) -> int:
        """The created time as a Unix time (0 when unparsable): fixed tar member times."""
        try:
            created = datetime.fromisoformat(self.created)
        except (TypeError, ValueError):
            return 0
        # A time without a zone is taken as UTC, so the result does not depend on the host.
        return max(0, int(created.replace(tzinfo=created.tzinfo or UTC).timestamp()))


def cpu_total(entries: list[Entry]) -> tuple[float, int]:
    """The fits' CPU seconds summed, and how many fits reported theirs."""
    cpu = [c for e in entries if not math.isnan(c := e.number("cpu_seconds"))]
    return sum(cpu), len(cpu)


def read_run_info(run: Path) -> RunInfo:
    try:
        info = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    name = str(info.get("name", ""))
    inputs = info.get("input") if isinstance(info.get("input"), dict) else {}
    settings = info.get("settings") if isinstance(info.get("settings"), dict) else {}
    return RunInfo(
        # The name becomes part of a file name: only a safe one is used.
        name=name if SAFE_ID.fullmatch(name) else run.resolve().name,
        created=str(info.get("created", "")),
        input_path=str(inputs.get("path", "")),
        preset=str(settings.get("preset", "")),
    )


def one_line(text: str) -> str:
    """Terminal colours and control characters out, whitespace collapsed."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _error_line(path: Path, tail: int = 8192) -> str:
    """The last line of a node's stderr that says what went wrong, with the exit code the
    job wrapper (jobs/fit.sh) reports after it."""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - tail))
        lines = [one_line(s) for s in fh.read().decode("utf-8", "replace").splitlines()]
    lines = [s for s in lines if s]
    said = [s for s in lines if not any(w.fullmatch(s) for w in _WRAPPER_LINES)]
    code = next((m[1] for s in reversed(lines) if (m := _WRAPPER_LINES[0].fullmatch(s))), "0")
    if not said:
        return lines[-1] if lines else ""
    return said[-1] + (f" (exit {code})" if code != "0" else "")


def _unusable_rows(run: Path, ids: list[str]) -> tuple[dict[int, str], str]:
    """Rows PRIORS marks unusable, and '' or why there are no priors to go by."""
    path = run / "infer" / "priors.fits"
    if not path.exists():
        return {}, NO_INFERENCE
    try:
        with fits.open(path, memmap=False) as hdul:
            table = Table.read(hdul["PRIORS"], character_as_bytes=False)
        if [str(v).strip() for v in table["COADD_OBJECT_ID"]] != ids:
            return {}, f"{NO_INFERENCE} (infer/priors.fits is not for these candidates)"
        return {
            row: one_line(str(problem)) or "unusable cutout"
            for row, (usable, problem) in enumerate(table["USABLE", "PROBLEM"])
            if not usable
        }, ""
    except (OSError, KeyError, ValueError, TypeError):
        return {}, f"{NO_INFERENCE} (infer/priors.fits is unreadable)"


def _from_params(entry: Entry, path: Path) -> Entry:
    try:
        params = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        entry.status, entry.flag = "FAILED", "FAILED"
        entry.reason = f"nodes/{entry.id}/params.json is unreadable ({type(err).__name__})"
        return entry
    params = params if isinstance(params, dict) else {}
    flag = str(params.get("flag", ""))
    entry.params, entry.flag = params, flag
    entry.reason = one_line(str(params.get("reason") or ""))
    if flag in FITTED and not isinstance(params.get("parameters"), dict):
        entry.status, entry.flag = "FAILED", "FAILED"
        entry.reason = f"nodes/{entry.id}/params.json says {flag} but holds no parameters"
    elif flag in FLAGS:
        entry.status = "FAILED" if flag == "FAILED" else "DONE"
    else:
        entry.status, entry.flag = "FAILED", "FAILED"
        entry.reason = f"nodes/{entry.id}/params.json has no known flag ({flag!r})"
    return entry


def collect(run: Path) -> tuple[list[Entry], Table, str]:
    """One entry per catalogue row, the catalogue's table and its ID column.

    Raises :class:`lensjobs.catalog.CatalogError` when ``run/candidates.fits`` cannot be
    read: without the catalogue there are no rows to report.
    """
    with open_catalog(run / "candidates.fits") as catalog:
        ids, table, id_column = catalog.ids, catalog.table, catalog.id_column
        unusable, no_priors = _unusable_rows(run, ids)
        # priors.fits records the problems of each cutout: the cutouts are scanned only
        # without it (the pictures read every cutout anyway, and once is enough).
        skipped = {p.row: p.reason for p in catalog.scan()} if no_priors else {}
    entries = []
    for row, cid in enumerate(ids):
        entry = Entry(row, cid, "MISSING")
        node = run / "nodes" / cid
        reason = skipped.get(row) or unusable.get(row)
        if reason:
            entry.status, entry.reason = "SKIPPED", reason
        elif (node / "params.json").exists():
            _from_params(entry, node / "params.json")
        elif no_priors:
            entry.reason = no_priors
        else:
            err = node / "fit.err"
            entry.reason = (_error_line(err) if err.exists() else "") or NO_OUTPUT
        entries.append(entry)
    return entries, table, id_column
