"""Split a catalogue and its priors into one fit input per candidate (the infer node's
POST script): ``NODES/<ID>/input.fits`` with the cutout, the segmentation map (most
probable class per pixel) and the candidate's row of priors.fits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from lensjobs.catalog import open_catalog, row_dict
from lensjobs.fit.model import Candidate
from lensjobs.fit.node import write_candidate

INPUT_FILE = "input.fits"


def split_priors(
    candidates: Path,
    priors: Path,
    nodes_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Write every candidate's fit input; returns the IDs in catalogue order."""
    with (
        open_catalog(candidates) as catalog,
        fits.open(priors, memmap=False) as hdul,
    ):  # scaled PROBS cannot be memory-mapped
        table = Table.read(hdul["PRIORS"])
        if list(table["COADD_OBJECT_ID"]) != catalog.ids:
            raise ValueError(f"{priors}: its candidates are not those of {candidates}")
        probs = hdul["PROBS"]
        for start, block in catalog.iter_cutouts():
            classes = np.asarray(probs.section[start : start + len(block)]).argmax(axis=1)
            for k in range(len(block)):
                prior = row_dict(table[start + k])
                candidate = Candidate(
                    id=catalog.ids[start + k],
                    cutout=block[k],
                    fwhm=catalog.fwhm[start + k],
                    pixscale=catalog.pixscale,
                    magzero=catalog.magzero,
                    prior=prior,
                    classes=classes[k].astype(np.uint8),
                )
                write_candidate(nodes_dir / candidate.id / INPUT_FILE, candidate)
            if progress:
                progress(len(block))
        return catalog.ids
