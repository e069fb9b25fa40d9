"""How a cutout is shown: one gri colour composite and one critical-curve computation for
every picture lensjobs makes (the fit's overview, the gallery's thumbnails and cards)."""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.visualization import make_lupton_rgb

BORDER = 4  # px: the sky ring a cutout's noise is measured on, as the networks do


def colour(images: np.ndarray, rms: np.ndarray) -> np.ndarray:
    """A gri colour composite (i red, r green, g blue) in units of each band's sky noise,
    with one asinh stretch (Lupton et al. 2004), as uint8 (n, n, 3)."""
    scaled = [np.nan_to_num(images[k]) / rms[k] for k in (2, 1, 0)]
    return make_lupton_rgb(*scaled, minimum=-1.0, stretch=8.0, Q=6.0)


def sky_rms(images: np.ndarray) -> np.ndarray:
    """Each band's sky noise from the cutout's border (1.4826 MAD), 1 where it is zero."""
    ring = np.ones(images.shape[-2:], bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    border = images[:, ring]
    mad = np.nanmedian(np.abs(border - np.nanmedian(border, axis=1)[:, None]), axis=1)
    rms = 1.4826 * np.nan_to_num(mad)
    return np.where(rms > 0, rms, 1.0)


def lens_curves(
    kwargs_lens: list[dict[str, Any]], size: float, pixscale: float
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """The critical curves and caustics of an SIE + shear (x, y in arcsec)."""
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LensModel.lens_model_extensions import LensModelExtensions

    extensions = LensModelExtensions(LensModel(["SIE", "SHEAR"]))
    ra, dec, ra_c, dec_c = extensions.critical_curve_caustics(
        kwargs_lens, compute_window=size, grid_scale=pixscale / 4
    )
    return list(zip(ra, dec, strict=True)), list(zip(ra_c, dec_c, strict=True))
