"""The run's results files: ``catalog.fits`` / ``catalog.csv`` (one row per input candidate,
catalogue order), ``failed.txt``, ``results/MANIFEST`` and the summary tarball.

Deterministic: the same run directory gives the same bytes (no dates in headers, sorted
tar members with fixed times and owners, a gzip header without time or name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Column, Table

from lensjobs import __version__
from lensjobs.aggregate.collect import ESTIMATES, Entry, RunInfo
from lensjobs.files import atomic_write, manifest, sha256_of

ID_COLUMN = "COADD_OBJECT_ID"  # as in priors.fits
UNITS = {"THETA_E": "arcsec", "CENTER_X": "arcsec", "CENTER_Y": "arcsec"}
ERROR_COLUMNS = (
    ("ERR", "total error: statistical and systematic in quadrature"),
    ("ERR_STAT", "statistical error: (p84 - p16) / 2 of the posterior"),
    ("ERR_SYS", "systematic error, calibrated on model-breaking simulations"),
)


def _ascii(text: str) -> str:
    """FITS holds ASCII only; anything else becomes '?'."""
    return text.encode("ascii", "replace").decode()


def _numeric(table: Table, name: str | None) -> np.ndarray | None:
    """A column as floats (masked values as NaN), or None when it is absent or not numbers."""
    if name is None:
        return None
    try:
        return np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan)
    except (TypeError, ValueError):
        return None


def results_table(entries: list[Entry], inputs: Table, id_column: str) -> Table:
    """The results columns, then the input's other columns under names that do not clash."""
    upper = {c.upper(): c for c in inputs.colnames}
    out = Table()
    out[ID_COLUMN] = [e.id for e in entries]
    used = {id_column}
    for name in ("RA", "DEC"):
        values = _numeric(inputs, upper.get(name))
        out[name] = Column(np.full(len(entries), np.nan) if values is None else values, unit="deg")
        if values is not None:
            used.add(upper[name])
    out["STATUS"] = [e.status for e in entries]
    out["FLAG"] = [e.flag for e in entries]
    out["REASON"] = [_ascii(e.reason) for e in entries]
    for name in ESTIMATES:
        values = np.array(
            [(*e.estimate(name), *e.error_parts(name)) for e in entries], dtype=float
        ).reshape(-1, 4)
        out[name] = Column(values[:, 0], unit=UNITS.get(name))
        for k, (suffix, description) in enumerate(ERROR_COLUMNS, start=1):
            out[f"{name}_{suffix}"] = Column(
                values[:, k], unit=UNITS.get(name), description=description
            )
    out["REDUCED_CHI2"] = [e.number("reduced_chi2", "joint") for e in entries]
    out["CPU_SECONDS"] = Column([e.number("cpu_seconds") for e in entries], unit="s")
    taken = {c.upper() for c in out.colnames}
    for name in inputs.colnames:
        if name in used:
            continue
        new = name
        while new.upper() in taken:  # e.g. an input column FLAG is carried as IN_FLAG
            new = f"IN_{new}"
        taken.add(new.upper())
        out[new] = inputs[name]
    return out


def write_catalog_fits(path: Path, table: Table, info: RunInfo) -> Path:
    hdu = fits.BinTableHDU(table, name="RESULTS")
    for key, value, comment in (
        ("RUNNAME", info.name, "lensjobs run name"),
        ("CREATED", info.created, "run created (run.json)"),
        ("PRESET", info.preset, "fit preset"),
        ("LENSJOBS", __version__, "lensjobs version of the aggregate node"),
    ):
        hdu.header[key] = (_ascii(value), comment)
    hdus = fits.HDUList([fits.PrimaryHDU(), hdu])
    return atomic_write(path, lambda tmp: hdus.writeto(tmp))


def write_catalog_csv(path: Path, table: Table) -> Path:
    # CSV has one value per cell: columns holding arrays stay in catalog.fits only.
    flat = table[[c for c in table.colnames if table[c].ndim == 1]]
    return atomic_write(path, lambda tmp: flat.write(tmp, format="ascii.csv"))


def write_failed(path: Path, entries: list[Entry]) -> Path:
    """``ID<TAB>status<TAB>reason`` per candidate not DONE, under a ``#`` header line."""
    lines = ["# ID\tstatus\treason"]
    lines += [f"{e.id}\t{e.status}\t{e.reason}" for e in entries if e.status != "DONE"]
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_results_manifest(results: Path) -> Path:
    """``results/MANIFEST``: the sha256 of every fit tarball there."""
    text = manifest((p.name, sha256_of(p)) for p in sorted(results.glob("*.tar.gz")))
    return atomic_write(results / "MANIFEST", lambda tmp: tmp.write_text(text))
