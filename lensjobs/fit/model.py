"""The lens model of one candidate, as lenstronomy keyword arguments.

SIE mass, SERSIC_ELLIPSE lens light with its centre joined to the mass centre, and a
SERSIC_ELLIPSE source (15 free parameters); a Gaussian PSF per band; g, r, i fitted
together with ``multi-linear`` (linear amplitudes solved per band). Initial values, widths
and bounds of the mass come from the regressor's values and uncertainties; the source
starts where the arc pixels map back to through the prior mass; class-2 pixels (other
objects), grown by the PSF, are masked with a binary likelihood mask; the background rms
per band comes from the pixels segmented as background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from lenstronomy.LensModel.lens_model import LensModel
from scipy import ndimage

from lensjobs.catalog import BANDS
from lensjobs.frame import pixel_grid, pixel_to_angle
from lensjobs.labels import ARCS, OTHER
from lensjobs.simulate import DES_BANDS

KWARGS_MODEL = {
    "lens_model_list": ["SIE"],
    "lens_light_model_list": ["SERSIC_ELLIPSE"],
    "source_light_model_list": ["SERSIC_ELLIPSE"],
}
KWARGS_CONSTRAINTS = {"joint_lens_with_light": [[0, 0, ["center_x", "center_y"]]]}
# DES coadd: 10 x 90 s per band; the Poisson term in image units (zero point MAGZERO).
EXPOSURE_SECONDS = 900.0
MIN_SIGMA = {"theta_E": 0.05, "center": 0.03, "e": 0.05}


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


def likelihood_mask(candidate: Candidate) -> np.ndarray:
    """1 where pixels count, 0 on other objects grown by the PSF FWHM."""
    radius = max(1, int(np.ceil(candidate.fwhm.max() / candidate.pixscale)))
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    grown = ndimage.binary_dilation(candidate.classes == OTHER, structure=disk)
    # Never mask the arcs: they carry the lensing information.
    return (~grown | (candidate.classes == ARCS)).astype(float)


def multi_band_list(candidate: Candidate, supersampling: int = 1) -> list[list[dict[str, Any]]]:
    grid = pixel_grid(candidate.num_pix, candidate.pixscale)
    bands = []
    for k, band in enumerate(BANDS):
        to_image_units = 10 ** (0.4 * (candidate.magzero - DES_BANDS[band]["magnitude_zero_point"]))
        kwargs_data = {
            "image_data": candidate.cutout[k].astype(float),
            "background_rms": float(candidate.prior[f"BKG_RMS_{band.upper()}"]),
            "exposure_time": EXPOSURE_SECONDS / to_image_units,
            **grid,
        }
        kwargs_psf = {"psf_type": "GAUSSIAN", "fwhm": float(candidate.fwhm[k]), "truncation": 5}
        kwargs_numerics = {"supersampling_factor": supersampling}
        bands.append([kwargs_data, kwargs_psf, kwargs_numerics])
    return bands


def _source_start(candidate: Candidate, lens: dict[str, float]) -> tuple[float, float]:
    """Flux-weighted mean of the arc pixels traced back through the prior mass."""
    rows, cols = np.nonzero(candidate.classes == ARCS)
    if len(rows) == 0:
        return lens["center_x"], lens["center_y"]
    x, y = pixel_to_angle(cols, rows, candidate.num_pix, candidate.pixscale)
    bx, by = LensModel(["SIE"]).ray_shooting(x, y, [lens])
    weight = np.clip(candidate.cutout[:, rows, cols].sum(axis=0), 1e-6, None)
    return float(np.average(bx, weights=weight)), float(np.average(by, weights=weight))


def kwargs_params(candidate: Candidate) -> dict[str, list[list[dict[str, float]]]]:
    """[init, sigma, fixed, lower, upper] per component, lenstronomy style."""
    p = candidate.prior
    half = (candidate.num_pix - 1) / 2 * candidate.pixscale
    theta = float(np.clip(p["THETA_E"], 0.2, half))
    theta_sigma = max(float(p["THETA_E_ERR"]), MIN_SIGMA["theta_E"])
    cx, cy = (float(np.clip(p[c], -half, half)) for c in ("CENTER_X", "CENTER_Y"))
    centre_sigma = max(float(p["CENTER_X_ERR"]), float(p["CENTER_Y_ERR"]), MIN_SIGMA["center"])
    e1, e2 = (float(np.clip(p[c], -0.4, 0.4)) for c in ("E1", "E2"))
    e_sigma = max(float(p["E1_ERR"]), float(p["E2_ERR"]), MIN_SIGMA["e"])
    # Bounds wide enough that a poor prior does not pin the fit: 5 sigma or more.
    reach = max(5 * centre_sigma, 0.3)
    lens = {"theta_E": theta, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy}
    lens_params = [
        [lens],
        [
            {
                "theta_E": theta_sigma,
                "e1": e_sigma,
                "e2": e_sigma,
                "center_x": centre_sigma,
                "center_y": centre_sigma,
            }
        ],
        [{}],
        [
            {
                "theta_E": max(0.1, theta - 5 * theta_sigma),
                "e1": -0.5,
                "e2": -0.5,
                "center_x": cx - reach,
                "center_y": cy - reach,
            }
        ],
        [
            {
                "theta_E": min(2 * half, theta + 5 * theta_sigma),
                "e1": 0.5,
                "e2": 0.5,
                "center_x": cx + reach,
                "center_y": cy + reach,
            }
        ],
    ]
    # lenstronomy's joint_lens_with_light makes the mass centre follow the light centre, so
    # the regressor's centre seeds the light's centre parameters.
    light_params = [
        [{"R_sersic": 1.0, "n_sersic": 4.0, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy}],
        [
            {
                "R_sersic": 0.5,
                "n_sersic": 1.0,
                "e1": 0.1,
                "e2": 0.1,
                "center_x": centre_sigma,
                "center_y": centre_sigma,
            }
        ],
        [{}],
        [
            {
                "R_sersic": 0.05,
                "n_sersic": 0.5,
                "e1": -0.5,
                "e2": -0.5,
                "center_x": cx - reach,
                "center_y": cy - reach,
            }
        ],
        [
            {
                "R_sersic": 10.0,
                "n_sersic": 8.0,
                "e1": 0.5,
                "e2": 0.5,
                "center_x": cx + reach,
                "center_y": cy + reach,
            }
        ],
    ]
    source_reach = max(theta, 0.5)
    sx, sy = (
        float(np.clip(v, c - 0.9 * source_reach, c + 0.9 * source_reach))
        for v, c in zip(_source_start(candidate, lens), (cx, cy), strict=True)
    )
    source_params = [
        [{"R_sersic": 0.2, "n_sersic": 1.0, "e1": 0.0, "e2": 0.0, "center_x": sx, "center_y": sy}],
        [
            {
                "R_sersic": 0.1,
                "n_sersic": 0.5,
                "e1": 0.1,
                "e2": 0.1,
                "center_x": 0.1 * theta,
                "center_y": 0.1 * theta,
            }
        ],
        [{}],
        [
            {
                "R_sersic": 0.02,
                "n_sersic": 0.5,
                "e1": -0.5,
                "e2": -0.5,
                "center_x": cx - source_reach,
                "center_y": cy - source_reach,
            }
        ],
        [
            {
                "R_sersic": 3.0,
                "n_sersic": 6.0,
                "e1": 0.5,
                "e2": 0.5,
                "center_x": cx + source_reach,
                "center_y": cy + source_reach,
            }
        ],
    ]
    return {
        "lens_model": lens_params,
        "lens_light_model": light_params,
        "source_model": source_params,
    }


def kwargs_likelihood(candidate: Candidate) -> dict[str, Any]:
    mask = likelihood_mask(candidate)
    return {"check_bounds": True, "image_likelihood_mask_list": [mask] * len(BANDS)}
