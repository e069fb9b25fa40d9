"""The infer node: both networks, batched, over a whole candidate catalogue.

Streams through the catalogue a chunk at a time (GPU with mixed precision when there is
one, CPU otherwise) and writes ``priors.fits``:

- ``PRIORS``: one row per candidate, in catalogue order: theta_E, centre x/y, e1, e2 with
  their predicted standard deviations (lenstronomy frame of the cutout, arcsec); background
  rms per band (1.4826 MAD of the pixels segmented as background, in image units); the
  pixel fraction of each class; ``N_ARC_PIXELS`` and ``NO_ARCS`` (fewer than
  ``MIN_ARC_PIXELS`` arc pixels); the PSF FWHMs; ``USABLE`` and ``PROBLEM`` for cutouts
  that could not be used (their values are NaN).
- ``PROBS``: class probabilities ``(N, 4, H, W)``. FITS has no 16-bit float, so they are
  stored as 16-bit integers with ``BSCALE = 1/32767`` (2 bytes a value, read back as
  float32 by astropy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from astropy.table import Table

from lensjobs import __version__
from lensjobs.catalog import BANDS, CandidateCatalog, cutout_problems, open_catalog
from lensjobs.files import atomic_write
from lensjobs.labels import ARCS, BACKGROUND
from lensjobs.models import regressor, segmenter
from lensjobs.models.inputs import border_sigma, normalise
from lensjobs.models.store import ModelCard, load_model, require_grid

MIN_ARC_PIXELS = 3
MIN_BACKGROUND_PIXELS = 50
CLASS_COLUMNS = ("FRAC_ARCS", "FRAC_LENS_LIGHT", "FRAC_OTHER", "FRAC_BACKGROUND")
PROB_SCALE = 32767
PRIORS_FILE = "priors.fits"


class Networks:
    """The segmenter and regressor, loaded once, on the best device available."""

    def __init__(self, weights: Path | None = None, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        seg, self.seg_card = load_model("segmenter", segmenter.build, weights)
        reg, self.reg_card = load_model("regressor", regressor.build, weights)
        self.segmenter, self.regressor = seg.to(self.device), reg.to(self.device)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class probabilities ``(N, 4, H, W)``, means and sigmas ``(N, 5)`` for inputs."""
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(
            self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"
        ):
            probs = segmenter.probabilities(self.segmenter, x, self.seg_card)
            mean, sigma = regressor.predict(self.regressor, x, self.reg_card)
        return probs.cpu().numpy(), mean.float().cpu().numpy(), sigma.float().cpu().numpy()


def background_rms(cutouts: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Robust per-band rms ``(N, 3)`` of the pixels segmented as background; the border
    estimate where too few are."""
    rms = border_sigma(cutouts)
    for k in range(len(cutouts)):
        sky = classes[k] == BACKGROUND
        if sky.sum() >= MIN_BACKGROUND_PIXELS:
            pixels = cutouts[k][:, sky]
            rms[k] = 1.4826 * np.median(
                np.abs(pixels - np.median(pixels, axis=1, keepdims=True)), axis=1
            )
    return rms


def _priors_table(catalog: CandidateCatalog) -> Table:
    n = catalog.n
    table = Table(
        {
            "COADD_OBJECT_ID": catalog.ids,
            "USABLE": np.ones(n, bool),
            "PROBLEM": np.full(n, "", dtype="U40"),
        }
    )
    for name in regressor.TRUTH_COLUMNS:
        table[name] = np.full(n, np.nan, np.float32)
        table[f"{name}_ERR"] = np.full(n, np.nan, np.float32)
    for band in BANDS:
        table[f"BKG_RMS_{band.upper()}"] = np.full(n, np.nan, np.float32)
    for name in CLASS_COLUMNS:
        table[name] = np.full(n, np.nan, np.float32)
    table["N_ARC_PIXELS"] = np.zeros(n, np.int32)
    table["NO_ARCS"] = np.zeros(n, bool)
    for k, band in enumerate(BANDS):
        table[f"FWHM_{band.upper()}"] = catalog.fwhm[:, k].astype(np.float32)
    return table


def _model_cards_header(header: fits.Header, cards: dict[str, ModelCard]) -> None:
    for kind, card in cards.items():
        header[f"{kind[:3].upper()}_SHA"] = (card.weights_sha256[:16], f"{kind} weights sha256")


def _probs_header(shape: tuple[int, ...]) -> fits.Header:
    header = fits.Header(
        [("XTENSION", "IMAGE"), ("BITPIX", 16), ("NAXIS", len(shape))]
        + [(f"NAXIS{i + 1}", size) for i, size in enumerate(reversed(shape))]
        + [("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", "PROBS")]
    )
    header["BSCALE"] = (1 / PROB_SCALE, "probabilities stored as 16-bit integers")
    header["BZERO"] = 0.0
    header["CLASSES"] = "arcs,lens light,other objects,background"
    return header


def infer_catalog(
    catalog_path: Path,
    out_dir: Path,
    networks: Networks,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Run both networks over the catalogue and write ``out_dir/priors.fits`` atomically;
    the probability maps stream to disk a batch at a time, so memory stays flat."""
    with open_catalog(catalog_path) as catalog:
        require_grid(catalog, [networks.seg_card, networks.reg_card])

        def write(tmp: Path) -> None:
            table = _priors_table(catalog)
            shape = (catalog.n, segmenter.NUM_CLASSES, catalog.num_pix, catalog.num_pix)
            primary = fits.PrimaryHDU()
            primary.header["ORIGIN"] = ("lensjobs", f"version {__version__}")
            primary.header["CATALOG"] = (catalog_path.name, "input candidate catalogue")
            _model_cards_header(
                primary.header, {"segmenter": networks.seg_card, "regressor": networks.reg_card}
            )
            primary.writeto(tmp)
            stream = fits.StreamingHDU(str(tmp), _probs_header(shape))
            try:
                for start, block in catalog.iter_cutouts(batch_size):
                    bad = dict(cutout_problems(block))
                    good = np.array([k not in bad for k in range(len(block))])
                    probs = np.zeros((len(block), *shape[1:]), np.float32)
                    if good.any():
                        probs[good], mean, sigma = networks(normalise(block[good]))
                        rows = np.arange(start, start + len(block))[good]
                        _fill(table, rows, block[good], probs[good], mean, sigma)
                    for k, reason in bad.items():
                        table["USABLE"][start + k] = False
                        table["PROBLEM"][start + k] = reason
                    stream.write(np.round(probs * PROB_SCALE).astype(">i2"))
                    if progress:
                        progress(len(block))
            finally:
                stream.close()
            priors = fits.BinTableHDU(table, name="PRIORS")
            priors.header["PIXSCALE"] = (catalog.pixscale, "arcsec/pixel")
            priors.header["MAGZERO"] = catalog.magzero
            priors.header["MINARCPX"] = (MIN_ARC_PIXELS, "NO_ARCS below this many arc pixels")
            fits.append(tmp, priors.data, priors.header)

        return atomic_write(out_dir / PRIORS_FILE, write)


def _fill(
    table: Table,
    rows: np.ndarray,
    cutouts: np.ndarray,
    probs: np.ndarray,
    mean: np.ndarray,
    sigma: np.ndarray,
) -> None:
    classes = probs.argmax(1)
    for j, name in enumerate(regressor.TRUTH_COLUMNS):
        table[name][rows] = mean[:, j]
        table[f"{name}_ERR"][rows] = sigma[:, j]
    rms = background_rms(cutouts, classes)
    for k, band in enumerate(BANDS):
        table[f"BKG_RMS_{band.upper()}"][rows] = rms[:, k]
    npix = classes[0].size
    counts = np.stack([(classes == c).sum(axis=(1, 2)) for c in range(segmenter.NUM_CLASSES)], 1)
    for c, name in enumerate(CLASS_COLUMNS):
        table[name][rows] = counts[:, c] / npix
    table["N_ARC_PIXELS"][rows] = counts[:, ARCS]
    table["NO_ARCS"][rows] = counts[:, ARCS] < MIN_ARC_PIXELS
