"""Candidate catalogues: read (streaming) and write FITS files as ../DESIGN.md lays them out.

A catalogue is an image HDU holding a cube ``(N, B, H, W)`` (bands g, r, i first) and a
binary table with N rows in the same order. Two layouts load: the preferred one
(``EXTNAME='IMAGES'`` and ``EXTNAME='CATALOG'``) and the original notebooks' one (images in
HDU 1, table in HDU 2, no names). Fatal problems raise :class:`CatalogError` carrying one
line that says what is wrong, where, and what to do. Per-candidate problems (non-finite
pixels, constant bands) are reported by :meth:`CandidateCatalog.scan` and those rows are
skipped.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from lensjobs.files import atomic_write
from lensjobs.ids import SAFE_ID

BANDS = ("g", "r", "i")
POSITIONAL_BANDS = ("g", "r", "i", "z", "y")  # band order assumed without a BANDS keyword
DEFAULT_PIXSCALE = 0.2637  # arcsec/pixel, DES
DEFAULT_MAGZERO = 30.0  # DES coadd flux units
DEFAULT_FWHM = {"g": 1.25, "r": 0.9, "i": 0.8}  # arcsec, the notebooks' defaults
ID_COLUMNS = ("COADD_OBJECT_ID", "Y6_COADD_OBJECT_ID")
FWHM_COLUMNS = tuple(f"FWHM_WMEAN_{b.upper()}" for b in BANDS)
CHUNK = 1024  # candidates read at once when streaming (~33 MB of 4x45x45 float32)


class CatalogError(ValueError):
    """A fatal problem with a candidate catalogue; ``str(err)`` is one line for the user."""


@dataclass(frozen=True)
class CandidateProblem:
    """A candidate that cannot be used; the rest of the catalogue goes on."""

    row: int
    id: str
    reason: str


@dataclass
class CandidateCatalog:
    """An opened candidate catalogue. Cutouts stay on disk and are read in chunks."""

    path: Path
    ids: list[str]
    id_column: str
    num_pix: int
    file_bands: tuple[str, ...]
    band_index: tuple[int, ...]
    pixscale: float
    magzero: float
    fwhm: np.ndarray
    fwhm_source: str
    table: Table
    image_hdu: str
    table_hdu: str
    defaults: list[str]
    _hdul: fits.HDUList = field(repr=False)
    _cube: fits.ImageHDU = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.ids)

    def cutouts(self, start: int, stop: int) -> np.ndarray:
        """Cutouts ``start:stop`` as float32 ``(n, 3, H, W)`` in band order g, r, i."""
        lo, hi = min(self.band_index), max(self.band_index) + 1
        block = np.asarray(self._cube.section[start:stop, lo:hi], dtype=np.float32)
        return block[:, [b - lo for b in self.band_index]]

    def iter_cutouts(self, chunk: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, cutouts)`` over the whole catalogue, ``chunk`` candidates at a time."""
        for start in range(0, self.n, chunk):
            yield start, self.cutouts(start, min(start + chunk, self.n))

    def scan(
        self, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
    ) -> list[CandidateProblem]:
        """Read every cutout once and list the candidates that cannot be used."""
        problems = []
        for start, block in self.iter_cutouts(chunk):
            for offset, reason in cutout_problems(block):
                row = start + offset
                problems.append(CandidateProblem(row, self.ids[row], reason))
            if progress:
                progress(len(block))
        return problems

    def close(self) -> None:
        self._hdul.close()

    def __enter__(self) -> CandidateCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cutout_problems(block: np.ndarray) -> Iterator[tuple[int, str]]:
    """Cutouts that cannot be fitted: non-finite pixels, or a band without any structure
    (constant: all zero, or a constant sky level; a fit of it would fail only at the end)."""
    finite = np.isfinite(block)
    n_bad = (~finite).sum(axis=(1, 2, 3))
    filled = np.where(finite, block, 0.0)
    constant = filled.max(axis=(2, 3)) == filled.min(axis=(2, 3))
    zero = constant & (filled.max(axis=(2, 3)) == 0)
    for k in np.flatnonzero((n_bad > 0) | constant.any(axis=1)):
        if n_bad[k]:
            yield int(k), f"{n_bad[k]} NaN/Inf pixels"
        elif zero[k].all():
            yield int(k), "cutout is all zero"
        else:
            parts = [
                f"band {b} all zero" if z else f"band {b} constant ({filled[k, j, 0, 0]:g})"
                for j, (b, c, z) in enumerate(zip(BANDS, constant[k], zero[k], strict=True))
                if c
            ]
            yield int(k), ", ".join(parts)


def row_dict(row: Table.Row) -> dict[str, object]:
    """A table row as plain Python values; masked (e.g. NaN-read-as-masked) floats as NaN."""
    values = {}
    for name, value in zip(row.colnames, row, strict=True):
        if value is np.ma.masked:
            value = np.nan if row.table[name].dtype.kind == "f" else None
        values[name] = value.item() if hasattr(value, "item") else value
    return values


def open_catalog(path: str | os.PathLike[str]) -> CandidateCatalog:
    """Open a candidate catalogue, checking everything that can be checked without reading
    the cutouts (use :meth:`CandidateCatalog.scan` for those)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CatalogError(f"{where}: no such file; give the path of a FITS candidate catalogue")
    with open(path, "rb") as fh:
        if fh.read(9) != b"SIMPLE  =":
            raise CatalogError(
                f"{where}: not a FITS file (it does not start with a SIMPLE card); "
                "give a FITS candidate catalogue"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            # No memmap: section reads fetch just the chunk, so resident memory stays flat
            # (a memory map would count every page read so far).
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except (OSError, AstropyUserWarning, ValueError):
        raise CatalogError(
            f"{where}: truncated or damaged FITS file (its headers or data end early); "
            "copy it again"
        ) from None
    try:
        return _build(hdul, path)
    except BaseException:
        hdul.close()
        raise


def _label(hdul: fits.HDUList, hdu: fits.hdu.base.ExtensionHDU) -> str:
    name = hdu.name if hdu.name and hdu.name != "PRIMARY" else ""
    return name or f"HDU {hdul.index(hdu)}"


def _find_cube(hdul: fits.HDUList, where: str) -> fits.ImageHDU:
    images = [h for h in hdul if h.is_image and h.header.get("NAXIS", 0) > 0]
    named = [h for h in images if h.name == "IMAGES"]
    if named:
        cube = named[0]
        if cube.header["NAXIS"] != 4:
            dims = "x".join(str(d) for d in cube.shape)
            raise CatalogError(
                f"{where}[IMAGES]: image is {cube.header['NAXIS']}-D ({dims}), need 4-D "
                "(N, bands, H, W); store the cutouts as one cube"
            )
        return cube
    for hdu in images:
        if hdu.header["NAXIS"] == 4:
            return hdu
    found = (
        ", ".join(f"{_label(hdul, h)} is {h.header['NAXIS']}-D" for h in images)
        or "no image data at all"
    )
    raise CatalogError(
        f"{where}: no 4-D image HDU (N, bands, H, W) found ({found}); "
        "store the cutouts as one cube, preferably in an extension named IMAGES"
    )


def _find_table(hdul: fits.HDUList, where: str) -> fits.BinTableHDU:
    tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
    named = [h for h in tables if h.name == "CATALOG"]
    if named or tables:
        return (named or tables)[0]
    raise CatalogError(
        f"{where}: no binary table HDU found; add a table (EXTNAME='CATALOG') with one row "
        "per cutout and a COADD_OBJECT_ID column"
    )


def _band_names(header: fits.Header, n_bands: int, where: str) -> tuple[str, ...]:
    raw = header.get("BANDS")
    if raw is None:
        return (
            ("g", "r", "i", "z", "y")[:n_bands]
            if n_bands <= 5
            else tuple(f"b{k}" for k in range(n_bands))
        )
    names = tuple(b.strip().lower() for b in str(raw).split(","))
    if len(names) != n_bands:
        raise CatalogError(
            f"{where}: BANDS = '{raw}' names {len(names)} bands but the cube has {n_bands}; "
            "fix the BANDS keyword"
        )
    missing = [b for b in BANDS if b not in names]
    if missing:
        raise CatalogError(
            f"{where}: BANDS = '{raw}' lacks {','.join(missing)}; lensjobs needs g, r and i"
        )
    return names


def _header_float(header: fits.Header, key: str, default: float, where: str) -> float:
    value = header.get(key, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise CatalogError(
            f"{where}: {key} = '{value}' is not a number; fix or remove it"
        ) from None
    if not np.isfinite(value):
        raise CatalogError(f"{where}: {key} = {value} is not finite; fix or remove it")
    return value


def _column(table: Table, names: Sequence[str]) -> str | None:
    upper = {c.upper(): c for c in table.colnames}
    for name in names:
        if name in upper:
            return upper[name]
    return None


def _ids(table: Table, where: str) -> tuple[str, list[str]]:
    column = _column(table, ID_COLUMNS)
    if column is None:
        raise CatalogError(
            f"{where}: no ID column; add COADD_OBJECT_ID (or Y6_COADD_OBJECT_ID) with one "
            "unique ID per candidate"
        )
    values = table[column]
    mask = np.ma.getmaskarray(values)
    ids = ["" if m else str(v).strip() for v, m in zip(values.tolist(), mask, strict=True)]
    for row, cid in enumerate(ids):
        if not SAFE_ID.fullmatch(cid):
            raise CatalogError(
                f"{where}: {column} {cid!r} in row {row} is not safe as a file name; "
                "use 1-128 letters, digits, '_' or '-'"
            )
    first: dict[str, int] = {}
    for row, cid in enumerate(ids):
        if cid in first:
            raise CatalogError(
                f"{where}: duplicate {column} '{cid}' in rows {first[cid]} and {row}; "
                "IDs must be unique"
            )
        first[cid] = row
    return column, ids


def _fwhm(table: Table, n: int) -> tuple[np.ndarray, str]:
    defaults = np.array([DEFAULT_FWHM[b] for b in BANDS])
    fwhm = np.tile(defaults, (n, 1))
    text = "defaults " + "/".join(f"{DEFAULT_FWHM[b]:g}" for b in BANDS) + " arcsec (g/r/i)"
    columns = [_column(table, [c]) for c in FWHM_COLUMNS]
    if any(c is None for c in columns):
        return fwhm, f"{text}: no FWHM_WMEAN_G/R/I columns"
    values = np.column_stack(
        [np.ma.filled(np.ma.asarray(table[c], dtype=float), np.nan) for c in columns]
    )
    good = np.isfinite(values) & (values > 0)
    fwhm[good] = values[good]
    n_bad = int((~good).sum())
    source = "catalogue columns FWHM_WMEAN_G/R/I"
    if n_bad:
        source += f" ({n_bad} missing or non-positive values replaced by {text})"
    return fwhm, source


def _build(hdul: fits.HDUList, path: Path) -> CandidateCatalog:
    where = str(path)
    cube = _find_cube(hdul, where)
    cube_where = f"{where}[{_label(hdul, cube)}]"
    n, n_bands, height, width = cube.shape
    if n_bands < 3:
        raise CatalogError(
            f"{cube_where}: {n_bands} band(s), need at least 3 (g, r, i) along axis 1 of "
            "(N, bands, H, W)"
        )
    if height != width:
        raise CatalogError(f"{cube_where}: cutouts are {height}x{width}; they must be square")
    if height < 8:
        raise CatalogError(f"{cube_where}: cutouts are {height}x{width}; need at least 8x8")
    file_bands = _band_names(cube.header, n_bands, cube_where)
    defaults = [
        f"{key} = {value}"
        for key, value in (
            ("BANDS", ",".join(file_bands)),
            ("PIXSCALE", DEFAULT_PIXSCALE),
            ("MAGZERO", DEFAULT_MAGZERO),
        )
        if key not in cube.header
    ]
    pixscale = _header_float(cube.header, "PIXSCALE", DEFAULT_PIXSCALE, cube_where)
    if pixscale <= 0:
        raise CatalogError(
            f"{cube_where}: PIXSCALE = {pixscale:g} is not positive; set it to the pixel "
            "scale in arcsec/pixel (DES: 0.2637)"
        )
    magzero = _header_float(cube.header, "MAGZERO", DEFAULT_MAGZERO, cube_where)

    table_hdu = _find_table(hdul, where)
    table_where = f"{where}[{_label(hdul, table_hdu)}]"
    table = Table.read(table_hdu, character_as_bytes=False)
    if len(table) != n:
        raise CatalogError(
            f"{where}: {_label(hdul, table_hdu)} has {len(table)} rows but "
            f"{_label(hdul, cube)} has {n} cutouts; rows and cutouts must match one to one"
        )
    if n == 0:
        raise CatalogError(f"{where}: the catalogue is empty (0 candidates); nothing to do")
    id_column, ids = _ids(table, table_where)
    fwhm, fwhm_source = _fwhm(table, n)
    return CandidateCatalog(
        path=path,
        ids=ids,
        id_column=id_column,
        num_pix=int(height),
        file_bands=file_bands,
        band_index=tuple(file_bands.index(b) for b in BANDS),
        pixscale=pixscale,
        magzero=magzero,
        fwhm=fwhm,
        fwhm_source=fwhm_source,
        table=table,
        image_hdu=_label(hdul, cube),
        table_hdu=_label(hdul, table_hdu),
        defaults=defaults,
        _hdul=hdul,
        _cube=cube,
    )


def write_catalog(
    path: str | os.PathLike[str],
    images: np.ndarray,
    table: Table,
    *,
    pixscale: float = DEFAULT_PIXSCALE,
    magzero: float = DEFAULT_MAGZERO,
    bands: Sequence[str] | None = None,
    extra_hdus: Sequence[fits.hdu.base.ExtensionHDU] = (),
    primary_cards: dict[str, object] | None = None,
) -> Path:
    """Write a catalogue in the preferred layout, atomically (a temporary file, then rename).

    ``images`` is ``(N, B, H, W)``; ``table`` has N rows in the same order; ``bands`` name
    the B bands (default: g, r, i, z, y in that order).
    """
    path = Path(path)
    if images.ndim != 4 or images.shape[0] != len(table):
        raise ValueError(f"images {images.shape} do not match a table of {len(table)} rows")
    bands = tuple(bands or POSITIONAL_BANDS[: images.shape[1]])
    if len(bands) != images.shape[1]:
        raise ValueError(f"{len(bands)} band names for {images.shape[1]} bands")
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = "lensjobs"
    for key, value in (primary_cards or {}).items():
        primary.header[key] = value
    cube = fits.ImageHDU(np.asarray(images, dtype=np.float32), name="IMAGES")
    cube.header["BANDS"] = (",".join(bands), "band order along axis 1")
    cube.header["PIXSCALE"] = (pixscale, "arcsec/pixel")
    cube.header["MAGZERO"] = (magzero, "magnitude zero point of the pixel values")
    table_hdu = fits.BinTableHDU(table, name="CATALOG")
    hdus = fits.HDUList([primary, cube, table_hdu, *extra_hdus])
    return atomic_write(path, lambda tmp: hdus.writeto(tmp, overwrite=True))
