"""The lens model of one candidate: its parameters, where they start and how far they go.

SIE + external SHEAR mass (the shear's origin at the cutout centre), a SERSIC_ELLIPSE lens
light whose centre is the mass centre, and a source of a SERSIC_ELLIPSE and a compact
GAUSSIAN knot: 20 parameters in lenstronomy's ``Param`` order and names (:data:`NAMES`).
Real sources are clumpy; on model-breaking simulations a Sersic alone left its shape
parameters at their bounds in two fits of three, and the knot took theta_E's median error
from 4.2 to 2.8 % on the calibration sets and from 6.2 to 4.9 % on the check set
(BENCHMARKS.md). A PSF per band of a core and a wider wing Gaussian (likelihood.py), its
FWHM fitted too (3 parameters), starting from the catalogue's with a Gaussian prior of
:data:`FWHM_PRIOR` of it (a catalogue's mean FWHM is not every object's), and the wing's
share of the light, one for all bands. g, r, i are fitted together with their linear
amplitudes solved per band (lenstronomy's ``multi-linear``).
The likelihood itself is :mod:`lensjobs.fit.likelihood`.

Initial values and widths of the mass come from the regressor; bounds reach far enough
that a regressor off by 3 sigma (or more) still lets the fit reach the truth. The source
starts where the arc pixels map back to through the prior mass. Class-2 pixels (other
objects), grown by the PSF, are masked, and the light of those objects past the mask is
fitted too, as fixed images with linear amplitudes (:func:`other_wings`); the background
rms per band comes from the pixels segmented as background.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from lensjobs.catalog import BANDS
from lensjobs.fit import likelihood
from lensjobs.fit.inputs import Candidate
from lensjobs.fit.likelihood import NAMES, Data
from lensjobs.frame import pixel_to_angle
from lensjobs.labels import ARCS, OTHER
from lensjobs.simulate import DES_BANDS, TRUTH_PARAMETERS

KWARGS_MODEL = {
    "lens_model_list": ["SIE", "SHEAR"],
    "lens_light_model_list": ["SERSIC_ELLIPSE"],
    "source_light_model_list": ["SERSIC_ELLIPSE", "GAUSSIAN"],
}
# DES coadd: 10 x 90 s per band; the Poisson term in image units (zero point MAGZERO).
EXPOSURE_SECONDS = 900.0
# The PSF reaches 4 sigma of its widest wing Gaussian the FWHM's bounds allow, rounded up
# to a multiple of PSF_RADIUS_STEP pixels: the radius sets the likelihood's array shapes, and
# a batch job compiles the likelihood once per shape (~4.5 CPU-s, more than half a fit), so
# candidates of similar seeing must share one.
PSF_TRUNCATION = 4.0
PSF_RADIUS_STEP = 4
FWHM_PRIOR = 0.1  # prior sigma of the PSF FWHM, a fraction of the catalogue's
FWHM_RANGE = (0.6, 1.6)  # bounds of the PSF FWHM, in units of the catalogue's
# The wing's share of the PSF's light: 0.27-0.57 for Moffat profiles of beta 2.5-4.5.
PSF_WING_MAX = 0.8
# Parameters whose bound is a value they take (a Gaussian PSF has no wing): no warning there.
BOUNDS_TAKEN = ("psf_wing",)
MIN_SIGMA = {"theta_E": 0.05, "center": 0.03, "e": 0.05}
# Bounds in prior sigmas: a regressor 3 sigma off is well inside.
PRIOR_REACH = 6.0
SHEAR_MAX = 0.3
# A weak Gaussian prior on each shear component: lenses' external shears are mostly below
# 0.1, and without it a small lens can trade its ellipticity for a shear at the bound.
SHEAR_PRIOR_SIGMA = 0.1
ELLIPTICITY_MAX = 0.5
# The source's knot: a Gaussian of KNOT_SIGMA (arcsec) at first, its width and its offset
# from the Sersic's centre under Gaussian priors of KNOT_SIGMA and KNOT_REACH, so that a
# knot the data do not need (it holds no light) leaves the Hessian well defined. Its width
# is at least KNOT_MIN_SIGMA, a third of a 3x3 sub-pixel at DES's scale: narrower, it is a
# spike the sub-pixels sample unevenly, and the optimum then has no Hessian.
KNOT_SIGMA = 0.05
KNOT_MIN_SIGMA = 0.03
KNOT_REACH = 0.3
# The physical parameters of the lens: reported with calibrated errors, checked for bounds.
LENS_PARAMETERS = (
    "theta_E_lens0",
    "e1_lens0",
    "e2_lens0",
    "gamma1_lens1",
    "gamma2_lens1",
    "center_x_lens_light0",
    "center_y_lens_light0",
)


@dataclass
class Start:
    """Initial values, widths (for the PSO's spread and the optimiser's scale), hard
    bounds, and Gaussian priors (mean and sigma; sigma inf: flat within the bounds), each
    an array in :data:`NAMES` order."""

    init: np.ndarray
    sigma: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    prior_mean: np.ndarray
    prior_sigma: np.ndarray
    # (i, j, sigma): a Gaussian prior of that sigma on parameter i minus parameter j.
    ties: tuple[tuple[int, int, float], ...] = ()

    def log_prior(self, points: np.ndarray) -> np.ndarray:
        """The log-prior of parameter vectors ``(..., ndim)`` inside the bounds, up to a
        constant (the bounds themselves are the sampler's)."""
        value = -0.5 * np.sum(((points - self.prior_mean) / self.prior_sigma) ** 2, axis=-1)
        for i, j, sigma in self.ties:
            value = value - 0.5 * ((points[..., i] - points[..., j]) / sigma) ** 2
        return value

    def log_prior_gradient(self, point: np.ndarray) -> np.ndarray:
        gradient = -(point - self.prior_mean) / self.prior_sigma**2
        for i, j, sigma in self.ties:
            pull = (point[i] - point[j]) / sigma**2
            gradient[i] -= pull
            gradient[j] += pull
        return gradient


def likelihood_mask(candidate: Candidate) -> np.ndarray:
    """1 where pixels count, 0 on other objects grown by the PSF FWHM."""
    radius = max(1, int(np.ceil(candidate.fwhm.max() / candidate.pixscale)))
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    grown = ndimage.binary_dilation(candidate.classes == OTHER, structure=disk)
    # Never mask the arcs: they carry the lensing information.
    return (~grown | (candidate.classes == ARCS)).astype(float)


def exposure_times(candidate: Candidate) -> np.ndarray:
    """Seconds per band that turn image units into the DES counts of the Poisson term."""
    to_image_units = np.array(
        [10 ** (0.4 * (candidate.magzero - DES_BANDS[b]["magnitude_zero_point"])) for b in BANDS]
    )
    return EXPOSURE_SECONDS / to_image_units


def background_rms(candidate: Candidate) -> np.ndarray:
    return np.array([float(candidate.prior[f"BKG_RMS_{b.upper()}"]) for b in BANDS])


def psf_radius(candidate: Candidate) -> int:
    """Pixels the PSF reaches: PSF_TRUNCATION sigma of the widest wing Gaussian allowed (a
    wing is widest when it holds no light and the core is the whole FWHM), rounded up to a
    multiple of PSF_RADIUS_STEP."""
    core = FWHM_RANGE[1] * candidate.fwhm.max() / likelihood.FWHM_PER_SIGMA
    sigma = likelihood.WING_RATIO * core
    needed = PSF_TRUNCATION * sigma / candidate.pixscale
    return PSF_RADIUS_STEP * math.ceil(needed / PSF_RADIUS_STEP)


# Other objects are masked out to the PSF's FWHM, but a bright galaxy's light reaches
# further: on model-breaking simulations 24 of 28 fits off by more than 20 % in theta_E had
# interlopers (two thirds of all lenses have), the arcs grown or shrunk to take up their
# light; with these wings, 22 of 394 fits against 28 (BENCHMARKS.md). Round Gaussians of these
# widths at each of the brightest OTHER_MAX objects take it up instead. They are fixed images
# (linear amplitudes only, no parameter to optimise), and always OTHER_MAX slots of them,
# zero where there is no object, so that one compiled likelihood serves every candidate.
OTHER_MAX = 3
OTHER_WIDTHS = (0.5, 1.0, 2.0)  # arcsec, before the PSF


def other_wings(candidate: Candidate) -> np.ndarray:
    """Unit images (OTHER_MAX * len(OTHER_WIDTHS), n, n): round Gaussians of
    OTHER_WIDTHS at the flux centroids of the OTHER_MAX brightest other objects (connected
    class-2 regions), seen through a Gaussian PSF of the catalogue's mean FWHM; zero
    where there are fewer objects."""
    n, pixscale = candidate.num_pix, candidate.pixscale
    out = np.zeros((OTHER_MAX, len(OTHER_WIDTHS), n, n))
    labels, count = ndimage.label(candidate.classes == OTHER)
    flux = np.clip(candidate.cutout.sum(axis=0), 0, None)
    totals = ndimage.sum_labels(flux, labels, np.arange(1, count + 1))
    brightest = np.argsort(totals)[::-1][:OTHER_MAX] + 1
    x, y = pixel_to_angle(*np.meshgrid(np.arange(n), np.arange(n)), n, pixscale)
    psf = candidate.fwhm.mean() / likelihood.FWHM_PER_SIGMA
    for slot, label in enumerate(brightest):
        inside = labels == label
        weights = flux[inside] + 1e-12  # an object of no positive flux: its middle
        cx, cy = (np.sum(c[inside] * weights) / weights.sum() for c in (x, y))
        for j, width in enumerate(OTHER_WIDTHS):
            sigma = math.hypot(width, psf)  # a Gaussian seen through a Gaussian PSF
            out[slot, j] = likelihood.gaussian(x, y, sigma, cx, cy) * pixscale**2
    return out.reshape(-1, n, n)


def likelihood_data(candidate: Candidate, supersampling: int, core: float | None = None) -> Data:
    """The likelihood's arrays of a candidate; ``core`` as in likelihood.make_data."""
    return likelihood.make_data(
        candidate.cutout,
        likelihood_mask(candidate),
        background_rms(candidate),
        exposure_times(candidate),
        psf_radius(candidate),
        candidate.pixscale,
        supersampling,
        core,
        other_wings(candidate),
    )


def _source_start(candidate: Candidate, theta: float, cx: float, cy: float) -> tuple[float, float]:
    """Flux-weighted mean of the arc pixels traced back through a round prior mass."""
    rows, cols = np.nonzero(candidate.classes == ARCS)
    if len(rows) == 0:
        return cx, cy
    x, y = pixel_to_angle(cols, rows, candidate.num_pix, candidate.pixscale)
    r = np.maximum(np.hypot(x - cx, y - cy), 1e-6)
    bx, by = x - theta * (x - cx) / r, y - theta * (y - cy) / r
    weight = np.clip(candidate.cutout[:, rows, cols].sum(axis=0), 1e-6, None)
    return float(np.average(bx, weights=weight)), float(np.average(by, weights=weight))


def start(candidate: Candidate) -> Start:
    """Where a fit starts and how far it may go, from the regressor's priors."""
    p = candidate.prior
    half = (candidate.num_pix - 1) / 2 * candidate.pixscale
    theta = float(np.clip(p["THETA_E"], 0.2, half))
    theta_sigma = max(float(p["THETA_E_ERR"]), MIN_SIGMA["theta_E"])
    cx, cy = (float(np.clip(p[c], -half, half)) for c in ("CENTER_X", "CENTER_Y"))
    centre_sigma = max(float(p["CENTER_X_ERR"]), float(p["CENTER_Y_ERR"]), MIN_SIGMA["center"])
    e1, e2 = (float(np.clip(p[c], -0.4, 0.4)) for c in ("E1", "E2"))
    e_sigma = max(float(p["E1_ERR"]), float(p["E2_ERR"]), MIN_SIGMA["e"])
    reach = max(PRIOR_REACH * centre_sigma, 0.3)
    source_reach = max(theta, 0.5)
    sx, sy = (
        float(np.clip(v, c - 0.9 * source_reach, c + 0.9 * source_reach))
        for v, c in zip(_source_start(candidate, theta, cx, cy), (cx, cy), strict=True)
    )
    source_x = (sx, 0.1 * theta, cx - source_reach, cx + source_reach)
    source_y = (sy, 0.1 * theta, cy - source_reach, cy + source_reach)
    e_max = ELLIPTICITY_MAX
    # name: (init, sigma, lower, upper); the FWHMs also have a Gaussian prior, below.
    fwhm = dict(zip(BANDS, (float(f) for f in candidate.fwhm), strict=True))
    table: dict[str, tuple[float, float, float, float]] = {
        # Arcs the segmenter saw are not made by a lens 4x smaller or larger than the
        # regressor's, however wide its sigma.
        "theta_E_lens0": (
            theta,
            theta_sigma,
            max(0.1, theta / 4, theta - PRIOR_REACH * theta_sigma),
            min(2 * half, theta * 4, theta + PRIOR_REACH * theta_sigma),
        ),
        "e1_lens0": (e1, e_sigma, -e_max, e_max),
        "e2_lens0": (e2, e_sigma, -e_max, e_max),
        "gamma1_lens1": (0.0, 0.03, -SHEAR_MAX, SHEAR_MAX),
        "gamma2_lens1": (0.0, 0.03, -SHEAR_MAX, SHEAR_MAX),
        # Lensed sources are small, disky or irregular galaxies: a cuspy (n > 4) or large
        # (> 1.5") Sersic is the fit trading the source for the lens light.
        "R_sersic_source_light0": (0.2, 0.1, 0.02, 1.5),
        "n_sersic_source_light0": (1.0, 0.5, 0.5, 4.0),
        "e1_source_light0": (0.0, 0.1, -e_max, e_max),
        "e2_source_light0": (0.0, 0.1, -e_max, e_max),
        "center_x_source_light0": source_x,
        "center_y_source_light0": source_y,
        # The knot starts where the Sersic does (a prior ties them: below).
        "sigma_source_light1": (KNOT_SIGMA, KNOT_SIGMA, KNOT_MIN_SIGMA, 0.3),
        "center_x_source_light1": source_x,
        "center_y_source_light1": source_y,
        "R_sersic_lens_light0": (1.0, 0.5, 0.05, 10.0),
        "n_sersic_lens_light0": (4.0, 1.0, 0.5, 8.0),
        "e1_lens_light0": (e1, 0.1, -e_max, e_max),
        "e2_lens_light0": (e2, 0.1, -e_max, e_max),
        "center_x_lens_light0": (cx, centre_sigma, cx - reach, cx + reach),
        "center_y_lens_light0": (cy, centre_sigma, cy - reach, cy + reach),
        **{
            f"fwhm_{b}": (f, FWHM_PRIOR * f, FWHM_RANGE[0] * f, FWHM_RANGE[1] * f)
            for b, f in fwhm.items()
        },
        "psf_wing": (0.3, 0.15, 0.0, PSF_WING_MAX),
    }
    init, sigma, lower, upper = (np.array(v) for v in zip(*(table[n] for n in NAMES), strict=True))
    prior_mean, prior_sigma = np.zeros(len(NAMES)), np.full(len(NAMES), np.inf)
    for name in ("gamma1_lens1", "gamma2_lens1"):
        prior_sigma[NAMES.index(name)] = SHEAR_PRIOR_SIGMA
    k = NAMES.index("sigma_source_light1")
    prior_mean[k], prior_sigma[k] = KNOT_SIGMA, KNOT_SIGMA
    # The knot is a part of the source: near the Sersic's centre, wherever that goes.
    ties = tuple(
        (
            NAMES.index(f"center_{c}_source_light1"),
            NAMES.index(f"center_{c}_source_light0"),
            KNOT_REACH,
        )
        for c in "xy"
    )
    for b, f in fwhm.items():
        k = NAMES.index(f"fwhm_{b}")
        prior_mean[k], prior_sigma[k] = f, FWHM_PRIOR * f
    return Start(init, sigma, lower, upper, prior_mean, prior_sigma, ties)


def truth_vector(truth: Mapping[str, Any]) -> np.ndarray:
    """A simulation's TRUTH row as a parameter vector (:data:`NAMES`). Simulations have no
    knot as such: it sits where the source is, at KNOT_SIGMA, and holds no light."""
    knot = {
        "sigma_source_light1": KNOT_SIGMA,
        "center_x_source_light1": truth[TRUTH_PARAMETERS["center_x_source_light0"]],
        "center_y_source_light1": truth[TRUTH_PARAMETERS["center_y_source_light0"]],
    }
    return np.array(
        [float(knot[n]) if n in knot else float(truth[TRUTH_PARAMETERS[n]]) for n in NAMES]
    )


def to_kwargs(args: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """lenstronomy's keyword lists for a parameter vector (the constraints applied)."""
    # The PSF's parameters are not lenstronomy's.
    v = dict(zip(NAMES, (float(a) for a in args), strict=True))

    def part(suffix: str, keys: tuple[str, ...]) -> dict[str, float]:
        return {k: v[f"{k}_{suffix}"] for k in keys}

    light = part("lens_light0", likelihood.SERSIC_KEYS)
    lens = part("lens0", ("theta_E", "e1", "e2"))
    lens.update(center_x=light["center_x"], center_y=light["center_y"])
    return {
        "kwargs_lens": [lens, {**part("lens1", ("gamma1", "gamma2")), "ra_0": 0.0, "dec_0": 0.0}],
        "kwargs_source": [
            part("source_light0", likelihood.SERSIC_KEYS),
            part("source_light1", likelihood.GAUSSIAN_KEYS),
        ],
        "kwargs_lens_light": [light],
    }


PHYSICAL_LABELS = (
    r"$\theta_E$ [arcsec]",
    r"$q$",
    r"$\phi$ [deg]",
    r"$\gamma_\mathrm{ext}$",
    r"$\phi_\mathrm{ext}$ [deg]",
    r"$x$ [arcsec]",
    r"$y$ [arcsec]",
)


def physical(lens: np.ndarray) -> np.ndarray:
    """Samples of LENS_PARAMETERS (theta_E, e1, e2, gamma1, gamma2, x, y) as the quantities
    astronomers quote: theta_E, axis ratio q and position angle phi of the mass, shear
    strength and angle, centre (lenstronomy's conventions; angles in degrees)."""
    theta, e1, e2, g1, g2, x, y = np.asarray(lens, dtype=float).T
    c = np.hypot(e1, e2)
    q = (1 - c) / (1 + c)
    gamma = np.hypot(g1, g2)
    return np.stack([theta, q, _angle(e1, e2), gamma, _angle(g1, g2), x, y], axis=-1)


def _angle(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Position angles (deg) of the samples' (c1, c2) = c (cos 2phi, sin 2phi), within 90 deg
    of their mean direction: no sample jumps by 180 deg where the range would wrap."""
    mean = np.degrees(np.arctan2(np.mean(c2), np.mean(c1)) / 2)
    phi = np.degrees(np.arctan2(c2, c1) / 2)
    return mean + (phi - mean + 90) % 180 - 90
