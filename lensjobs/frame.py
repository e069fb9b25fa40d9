"""The one coordinate convention of lensjobs: lenstronomy's angular frame of a cutout.

``util.make_grid_with_coordtransform(num_pix, delta_pix, center_ra=0, center_dec=0,
subgrid_res=1, inverse=False)``: the cutout centre is (0, 0) arcsec, x grows with the
column index and y with the row index of ``image[row, col]``. This is the frame of
``simulation_util.data_configure_simple`` and of lenstronomy's SimAPI.
"""

from __future__ import annotations

import numpy as np
from lenstronomy.Util import util


def pixel_grid(num_pix: int, pixscale: float) -> dict[str, object]:
    """lenstronomy ``ImageData`` keyword arguments placing a cutout in the frame."""
    _, _, ra0, dec0, _, _, pix2angle, _ = util.make_grid_with_coordtransform(
        num_pix=num_pix,
        delta_pix=pixscale,
        center_ra=0,
        center_dec=0,
        subgrid_res=1,
        inverse=False,
    )
    return {
        "ra_at_xy_0": ra0,
        "dec_at_xy_0": dec0,
        "transform_pix2angle": pix2angle,
    }


def angle_to_pixel(
    x: np.ndarray | float, y: np.ndarray | float, num_pix: int, pixscale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Angular (x, y) in arcsec to (column, row) pixel coordinates (pixel centres integral)."""
    centre = (num_pix - 1) / 2
    return np.asarray(x) / pixscale + centre, np.asarray(y) / pixscale + centre


def pixel_to_angle(
    col: np.ndarray | float, row: np.ndarray | float, num_pix: int, pixscale: float
) -> tuple[np.ndarray, np.ndarray]:
    """(column, row) pixel coordinates to angular (x, y) in arcsec."""
    centre = (num_pix - 1) / 2
    return (np.asarray(col) - centre) * pixscale, (np.asarray(row) - centre) * pixscale
