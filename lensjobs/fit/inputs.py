"""Fit inputs: one candidate's cutout, segmentation map and priors in one FITS file
(``lensjobs node split`` writes them; the fit reads them). Nothing here needs the fit's
numerics, so the access point's split imports only this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from lensjobs.catalog import BANDS, row_dict
from lensjobs.files import atomic_write
from lensjobs.ids import SAFE_ID


@dataclass
class Candidate:
    """Everything one fit needs, in the lenstronomy frame of its cutout."""

    id: str
    cutout: np.ndarray  # (3, H, W) image units
    fwhm: np.ndarray  # (3,) arcsec
    pixscale: float
    magzero: float
    prior: dict[str, float]  # a PRIORS row: THETA_E, THETA_E_ERR, ..., BKG_RMS_G, ...
    classes: np.ndarray  # (H, W) segmentation classes

    @property
    def num_pix(self) -> int:
        return self.cutout.shape[-1]


class FitInputError(ValueError):
    """A fit input file that cannot be used; ``str(err)`` is one line."""


def read_candidate(path: Path) -> Candidate:
    """A per-candidate input file (``lensjobs node split`` writes them)."""
    try:
        with fits.open(path) as hdul:
            prior = Table.read(hdul["PRIOR"])[0]
            candidate = Candidate(
                id=str(hdul[0].header["CANDID"]),
                cutout=np.asarray(hdul["CUTOUT"].data, dtype=np.float32),
                fwhm=np.array([prior[f"FWHM_{b.upper()}"] for b in BANDS], dtype=float),
                pixscale=float(hdul["CUTOUT"].header["PIXSCALE"]),
                magzero=float(hdul["CUTOUT"].header["MAGZERO"]),
                prior=row_dict(prior),
                classes=np.asarray(hdul["SEGMAP"].data, dtype=np.uint8),
            )
    except FileNotFoundError:
        raise FitInputError(f"{path}: no such fit input; run 'lensjobs node split' first") from None
    except (OSError, KeyError, IndexError, TypeError, ValueError):
        raise FitInputError(
            f"{path}: not a fit input (needs CUTOUT, SEGMAP and PRIOR extensions and a CANDID "
            "keyword); write it with 'lensjobs node split'"
        ) from None
    if not SAFE_ID.fullmatch(candidate.id):
        raise FitInputError(
            f"{path}: its CANDID {candidate.id[:40]!r} is not a candidate ID (letters, digits, "
            "_ and - only); write it with 'lensjobs node split'"
        )
    shape = candidate.cutout.shape
    if len(shape) != 3 or shape[0] != len(BANDS) or shape[1] != shape[2]:
        raise FitInputError(
            f"{path}: CUTOUT is {shape}, not {len(BANDS)} square bands; write it with "
            "'lensjobs node split'"
        )
    if candidate.classes.shape != shape[1:]:
        raise FitInputError(
            f"{path}: SEGMAP is {candidate.classes.shape} but CUTOUT is {shape[1:]}; write it "
            "with 'lensjobs node split'"
        )
    return candidate


def input_hdus(
    cid: str,
    cutout: np.ndarray,
    classes: np.ndarray,
    pixscale: float,
    magzero: float,
    prior: fits.BinTableHDU,
) -> fits.HDUList:
    """A fit input as an HDU list (``prior`` is a one-row table named PRIOR)."""
    primary = fits.PrimaryHDU()
    primary.header["CANDID"] = cid
    image = fits.ImageHDU(cutout.astype(np.float32), name="CUTOUT")
    image.header["PIXSCALE"] = pixscale
    image.header["MAGZERO"] = magzero
    image.header["BANDS"] = ",".join(BANDS)
    segmap = fits.ImageHDU(classes.astype(np.uint8), name="SEGMAP")
    return fits.HDUList([primary, image, segmap, prior])


def write_candidate(path: Path, candidate: Candidate) -> Path:
    c = candidate
    prior = fits.BinTableHDU(Table(rows=[c.prior], names=list(c.prior)), name="PRIOR")
    hdus = input_hdus(c.id, c.cutout, c.classes, c.pixscale, c.magzero, prior)
    return atomic_write(path, lambda tmp: hdus.writeto(tmp))
