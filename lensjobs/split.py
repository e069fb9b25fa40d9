"""Split a catalogue and its priors into one fit input per candidate (the infer node's
POST script): ``NODES/<ID>/input.fits`` with the cutout, the segmentation map (most
probable class per pixel) and the candidate's row of priors.fits."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from lensjobs.catalog import open_catalog
from lensjobs.files import atomic_write
from lensjobs.fit.inputs import input_hdus

INPUT_FILE = "input.fits"


class DamagedPriors(OSError):
    """priors.fits cannot be read whole: the infer node wrote it atomically, so a transfer or
    the disk damaged it, and running that node again mends it (a fault, not bad input)."""


def split_priors(
    candidates: Path,
    priors: Path,
    nodes_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Write the fit input of every usable candidate; returns their IDs in catalogue order.

    One HDU list is built for the first candidate and refilled in place for every other:
    astropy rebuilds a table's header for each new table HDU, which made a fresh HDU list
    per candidate cost ~10x the file write (a 100,000-candidate split took ~35 min). The
    PRIOR row keeps priors.fits' column formats, so every ID fits its column.
    """
    with open_catalog(candidates) as catalog, _open_priors(priors) as hdul:
        rows = hdul["PRIORS"].data
        if list(rows["COADD_OBJECT_ID"]) != catalog.ids:
            raise ValueError(f"{priors}: its candidates are not those of {candidates}")
        probs = hdul["PROBS"]
        inputs: fits.HDUList | None = None
        written: list[str] = []
        for start, block in catalog.iter_cutouts():
            classes = np.asarray(probs.section[start : start + len(block)]).argmax(axis=1)
            for k in range(len(block)):
                i = start + k
                if not rows["USABLE"][i]:  # validation skipped it: it gets no fit node
                    continue
                written.append(catalog.ids[i])
                if inputs is None:
                    prior = fits.BinTableHDU(rows[i : i + 1].copy(), name="PRIOR")
                    inputs = input_hdus(
                        catalog.ids[i],
                        block[k],
                        classes[k],
                        catalog.pixscale,
                        catalog.magzero,
                        prior,
                    )
                else:
                    inputs[0].header["CANDID"] = catalog.ids[i]
                    inputs["CUTOUT"].data[:] = block[k]
                    inputs["SEGMAP"].data[:] = classes[k]
                    inputs["PRIOR"].data[0] = rows[i]
                atomic_write(nodes_dir / catalog.ids[i] / INPUT_FILE, inputs.writeto)
            if progress:
                progress(len(block))
        return written


def _open_priors(priors: Path) -> fits.HDUList:
    """priors.fits with every header read and its size checked against them, so that a
    damaged file is found before anything is written."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)  # "may have been truncated"
            # No memmap: scaled PROBS cannot be memory-mapped.
            hdul = fits.open(priors, memmap=False, lazy_load_hdus=False)
    except FileNotFoundError:
        raise
    except (OSError, AstropyUserWarning) as error:
        what = " ".join(str(error).split()) or type(error).__name__
        raise DamagedPriors(f"{priors}: truncated or damaged ({what})") from None
    if "PRIORS" not in hdul or "PROBS" not in hdul:
        hdul.close()
        raise DamagedPriors(f"{priors}: truncated or damaged (no PRIORS or PROBS extension)")
    return hdul
