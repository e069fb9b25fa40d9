"""DES-like strong-lens systems with lenstronomy's SimAPI, with segmentation labels.

Each system: an SIE mass (optionally with external shear) and a Sersic lens light sharing
its centre, a Sersic source placed inside the caustics so that it forms arcs or a ring
(magnification >= 3.6, lensed g magnitude 19.2-22.6 as in the original simulations), 0-2
unlensed interloper galaxies away from the arcs, and a fraction of non-lenses (no source).
Bands g, r, i are rendered with the DES camera and observing settings of lenstronomy's
``ObservationConfig.DES`` (read noise 7 e-, gain 4, 10 x 90 s, sky per band) at 0.2637
arcsec/pixel with a Gaussian PSF of per-object FWHM, then converted to coadd flux units at
zero point 30. Surface brightness is averaged over 8 x 8 sub-pixels per pixel
(``supersampling``), finer than any fit evaluates, so that a fit's numerics are tested, not
copied. External shear has its origin at the cutout centre, as in the fit.

``model_breaking`` departs from the fitted model the way real lenses do, each departure
drawn from a generator of its own (the same system without them is the plain one) and
recorded in ``TRUTH``:
- mass: a power law (lenstronomy's EPL) of slope 1.8-2.2 instead of the SIE's 2;
- PSF: a Moffat profile (beta 2.5-4.5) with wings, its FWHM off by up to +-10 % per band
  from the catalogue's ``FWHM_WMEAN_*`` (what a fit is told), convolved at sub-pixel
  resolution;
- source: 0-4 compact clumps carrying 20-50 % of its light around the Sersic;
- lens light: a bulge (n = 4) and a disk (n = 1, twice the radius, bluer) with a bulge
  share of 0.3-0.9, instead of one Sersic;
- noise correlated between neighbouring pixels as in resampled coadds (white noise
  smoothed by a Gaussian of 0.3-0.7 pixels, its per-pixel rms kept).

Labels come from the noise-free, PSF-convolved component images: for each component
(arcs, lens light, interlopers) its signal-to-noise in the noise-weighted band sum,
``S_c = sum_b(image_cb / sigma_b) / sqrt(3)``, with ``sigma_b`` the background rms of band
b. Classes: 0 arcs, 1 lens light, 2 other objects, 3 background. A pixel is
- arcs where ``S_arcs >= LABEL_SNR`` and ``S_arcs >= ARC_CONTRAST * max(S_lens, S_other)``
  (arcs win where they add a visible share of the light, as they are what the fits need);
- else other objects where ``S_other >= LABEL_SNR`` and ``S_other >= S_lens``;
- else lens light where ``S_lens >= LABEL_SNR``;
- else background.

Every system draws from its own generator spawned from the run seed, so a file is the
same for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.SimulationAPI.ObservationConfig.DES import DES
from lenstronomy.SimulationAPI.sim_api import SimAPI
from lenstronomy.Util import param_util
from pydantic import BaseModel, Field
from scipy import ndimage

from lensjobs.catalog import BANDS, DEFAULT_MAGZERO, DEFAULT_PIXSCALE, write_catalog
from lensjobs.labels import ARCS, BACKGROUND, CLASS_NAMES, LENS_LIGHT, OTHER

LABEL_SNR = 2.0
ARC_CONTRAST = 0.3
# The magnification of a trial source position (a selection criterion, not an image).
PROBE_NUMERICS = {"supersampling_factor": 2}
# The notebooks' DES set-up: 90 s x 10 exposures (lenstronomy's default of 3 coadd years).
DES_BANDS = {b: DES(band=b).kwargs_single_band() for b in BANDS}


class SimulationSettings(BaseModel):
    """Distributions the systems are drawn from (angles in arcsec)."""

    num_pix: int = Field(45, ge=16)
    pixscale: float = Field(DEFAULT_PIXSCALE, gt=0)
    magzero: float = DEFAULT_MAGZERO
    nonlens_frac: float = Field(0.1, ge=0, le=1)
    theta_e: tuple[float, float] = (0.6, 3.0)
    centre_max: float = Field(0.5, ge=0, description="lens offset from the cutout centre, per axis")
    shear_frac: float = Field(0.5, ge=0, le=1)
    shear_max: float = Field(0.08, ge=0)
    max_interlopers: int = Field(2, ge=0)
    min_magnification: float = 3.6
    lensed_mag_g: tuple[float, float] = (19.2, 22.6)
    lens_mag_r: tuple[float, float] = (18.5, 21.0)
    fwhm_r: tuple[float, float] = (0.75, 1.25)
    supersampling: int = Field(8, ge=1, description="sub-pixels per pixel side when rendering")
    noiseless: bool = Field(False, description="no noise (numerical studies)")
    model_breaking: bool = False
    slope: tuple[float, float] = (1.8, 2.2)
    psf_beta: tuple[float, float] = (2.5, 4.5)
    fwhm_error: float = Field(0.10, ge=0, lt=1)
    max_clumps: int = Field(4, ge=0)
    clump_share: tuple[float, float] = (0.2, 0.5)
    bulge_share: tuple[float, float] = (0.3, 0.9)
    noise_correlation_px: tuple[float, float] = (0.3, 0.7)


# TRUTH columns under the names of the fit's parameters (lenstronomy's), where the fitted
# model has them; for a model-breaking system they are the nearest the model can be.
TRUTH_PARAMETERS = {
    "theta_E_lens0": "THETA_E",
    "e1_lens0": "E1",
    "e2_lens0": "E2",
    "gamma1_lens1": "GAMMA1",
    "gamma2_lens1": "GAMMA2",
    "R_sersic_source_light0": "SRC_R_SERSIC",
    "n_sersic_source_light0": "SRC_N_SERSIC",
    "e1_source_light0": "SRC_E1",
    "e2_source_light0": "SRC_E2",
    "center_x_source_light0": "SRC_X",
    "center_y_source_light0": "SRC_Y",
    "R_sersic_lens_light0": "LENS_R_SERSIC",
    "n_sersic_lens_light0": "LENS_N_SERSIC",
    "e1_lens_light0": "LENS_E1",
    "e2_lens_light0": "LENS_E2",
    "center_x_lens_light0": "CENTER_X",
    "center_y_lens_light0": "CENTER_Y",
    "fwhm_g": "FWHM_TRUE_G",
    "fwhm_r": "FWHM_TRUE_R",
    "fwhm_i": "FWHM_TRUE_I",
    "psf_wing": "PSF_WING",
}


@dataclass
class SimulatedSystem:
    images: np.ndarray  # (3, H, W) float32, g r i, coadd flux units
    labels: np.ndarray  # (H, W) uint8
    truth: dict[str, float | int | bool]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _ellipticity(rng: np.random.Generator, q_min: float) -> tuple[float, float]:
    e1, e2 = param_util.phi_q2_ellipticity(rng.uniform(0, np.pi), rng.uniform(q_min, 1.0))
    return float(e1), float(e2)


def _interloper_positions(
    rng: np.random.Generator, count: int, centre: tuple[float, float], r_min: float, half: float
) -> list[tuple[float, float]]:
    """Positions inside the cutout at least ``r_min`` from the lens centre."""
    positions: list[tuple[float, float]] = []
    for _ in range(50 * count):
        if len(positions) == count:
            break
        x, y = rng.uniform(-half, half, size=2)
        if math.hypot(x - centre[0], y - centre[1]) >= r_min:
            positions.append((float(x), float(y)))
    return positions


@dataclass
class Departures:
    """How a model-breaking system departs from the fitted model (see the module doc)."""

    slope: float = 2.0
    psf_beta: float = math.inf  # Moffat beta; inf: the Gaussian PSF
    fwhm_scale: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BANDS, 1.0))
    clumps: list[tuple[float, float, float, float]] = field(
        default_factory=list
    )  # dx, dy, R, share
    bulge_share: float = 1.0
    disk_blue: float = 0.0  # the disk's g-r and r-i, bluer than the bulge's by this
    noise_correlation_px: float = 0.0

    @property
    def clump_share(self) -> float:
        return sum(c[3] for c in self.clumps)


def _draw_departures(
    rng: np.random.Generator, s: SimulationSettings, r_source: float
) -> Departures:
    n_clumps = int(rng.integers(0, s.max_clumps + 1))
    share = _uniform(rng, s.clump_share) if n_clumps else 0.0
    weights = rng.dirichlet(np.ones(n_clumps)) if n_clumps else []
    clumps = [
        (
            float(r_source * 1.5 * math.sqrt(rng.uniform()) * math.cos(angle)),
            float(r_source * 1.5 * math.sqrt(rng.uniform()) * math.sin(angle)),
            float(rng.uniform(0.03, 0.08)),
            float(share * w),
        )
        for w, angle in zip(weights, rng.uniform(0, 2 * np.pi, n_clumps), strict=True)
    ]
    return Departures(
        slope=_uniform(rng, s.slope),
        psf_beta=_uniform(rng, s.psf_beta),
        fwhm_scale={b: float(rng.uniform(1 - s.fwhm_error, 1 + s.fwhm_error)) for b in BANDS},
        clumps=clumps,
        bulge_share=_uniform(rng, s.bulge_share),
        disk_blue=float(rng.uniform(0.0, 0.3)),
        noise_correlation_px=_uniform(rng, s.noise_correlation_px),
    )


def moffat_kernel(fwhm: float, beta: float, pixscale: float, supersampling: int) -> np.ndarray:
    """A normalised Moffat PSF on sub-pixels, out to 4 FWHM."""
    step = pixscale / supersampling
    half = math.ceil(4 * fwhm / step)
    r = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1]) * step
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    kernel = (1 + (r / alpha) ** 2) ** -beta
    return kernel / kernel.sum()


def correlated(white: np.ndarray, sigma_px: float) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma_px`` pixels, rescaled to unit rms."""
    if sigma_px <= 0:
        return white
    half = math.ceil(4 * sigma_px)
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / sigma_px) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # the 2-D kernel, its outer product, has unit norm
    return ndimage.convolve1d(
        ndimage.convolve1d(white, kernel, axis=0, mode="wrap"), kernel, axis=1, mode="wrap"
    )


def _band_model(
    band: str, fwhm: float, settings: SimulationSettings, kwargs_model: dict, dep: Departures
) -> tuple[SimAPI, ImageModel]:
    kwargs_band = dict(DES_BANDS[band], pixel_scale=settings.pixscale, seeing=fwhm)
    ss = settings.supersampling
    numerics: dict = {"supersampling_factor": ss}
    if math.isfinite(dep.psf_beta):
        kwargs_band.update(
            psf_type="PIXEL",
            kernel_point_source=moffat_kernel(fwhm, dep.psf_beta, settings.pixscale, ss),
            point_source_supersampling_factor=ss,
        )
        numerics = {"supersampling_factor": ss, "supersampling_convolution": True}
    sim = SimAPI(settings.num_pix, kwargs_band, kwargs_model)
    return sim, sim.image_model_class(numerics)


def simulate_system(seed: np.random.SeedSequence, settings: SimulationSettings) -> SimulatedSystem:
    """Draw and render one system from its own seed."""
    rng = np.random.default_rng(seed)
    s = settings
    half = (s.num_pix - 1) / 2 * s.pixscale
    is_lens = bool(rng.random() >= s.nonlens_frac)
    fwhm_r = _uniform(rng, s.fwhm_r)
    fwhm = {
        "g": fwhm_r * rng.uniform(1.05, 1.25),
        "r": fwhm_r,
        "i": fwhm_r * rng.uniform(0.85, 0.98),
    }

    cx, cy = (float(v) for v in rng.uniform(-s.centre_max, s.centre_max, size=2))
    theta_e = float(np.exp(rng.uniform(*np.log(s.theta_e))))
    phi = rng.uniform(0, np.pi)
    q = rng.uniform(0.5, 1.0)
    e1, e2 = (float(v) for v in param_util.phi_q2_ellipticity(phi, q))
    gamma1 = gamma2 = 0.0
    if rng.random() < s.shear_frac:
        g1, g2 = param_util.shear_polar2cartesian(
            rng.uniform(0, np.pi), rng.uniform(0, s.shear_max)
        )
        gamma1, gamma2 = float(g1), float(g2)

    # Lens light: a red early-type roughly aligned with the mass.
    q_light = float(np.clip(q + rng.normal(0, 0.05), 0.4, 1.0))
    le1, le2 = param_util.phi_q2_ellipticity(phi + rng.normal(0, 0.15), q_light)
    lens_mag = {"r": _uniform(rng, s.lens_mag_r)}
    lens_mag["g"] = lens_mag["r"] + rng.uniform(1.0, 1.8)
    lens_mag["i"] = lens_mag["r"] - rng.uniform(0.35, 0.6)
    lens_light = {
        "R_sersic": rng.uniform(0.4, 1.5),
        "n_sersic": rng.uniform(2.5, 4.5),
        "e1": float(le1),
        "e2": float(le2),
        "center_x": cx,
        "center_y": cy,
    }

    # Interlopers: unlensed galaxies of any colour, kept clear of the Einstein ring.
    n_int = int(rng.integers(0, s.max_interlopers + 1))
    r_min = (theta_e if is_lens else 1.0) + 1.8
    interlopers = []
    for x, y in _interloper_positions(rng, n_int, (cx, cy), r_min, half - 0.3):
        ie1, ie2 = _ellipticity(rng, 0.4)
        mag_r = rng.uniform(19.5, 23.0)
        colours = (rng.uniform(0.2, 1.6), rng.uniform(0.1, 0.6))
        interlopers.append(
            (
                {
                    "R_sersic": rng.uniform(0.2, 0.9),
                    "n_sersic": rng.uniform(1.0, 4.0),
                    "e1": ie1,
                    "e2": ie2,
                    "center_x": x,
                    "center_y": y,
                },
                {"g": mag_r + colours[0], "r": mag_r, "i": mag_r - colours[1]},
            )
        )

    source = {"R_sersic": rng.uniform(0.1, 0.5), "n_sersic": rng.uniform(0.7, 2.5)}
    source["e1"], source["e2"] = _ellipticity(rng, 0.4)
    src_colour = (rng.uniform(-0.1, 0.6), rng.uniform(-0.1, 0.4))
    lensed_mag_g = _uniform(rng, s.lensed_mag_g)

    # Departures come from a generator of their own, so the draws above are the plain system's.
    dep = Departures()
    if s.model_breaking:
        child = np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, 1))
        dep = _draw_departures(np.random.default_rng(child), s, source["R_sersic"])

    lens = {"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy}
    if dep.slope != 2.0:
        lens["gamma"] = dep.slope
    kwargs_lens = [lens, {"gamma1": gamma1, "gamma2": gamma2, "ra_0": 0.0, "dec_0": 0.0}]
    lens_light_parts = [dict(lens_light)]
    if dep.bulge_share < 1:
        disk = dict(lens_light, R_sersic=2 * lens_light["R_sersic"], n_sersic=1.0)
        lens_light_parts = [dict(lens_light, n_sersic=4.0), disk]
    kwargs_model = {
        "lens_model_list": ["SIE" if dep.slope == 2.0 else "EPL", "SHEAR"],
        "lens_light_model_list": ["SERSIC_ELLIPSE"] * (len(lens_light_parts) + len(interlopers)),
        "source_light_model_list": ["SERSIC_ELLIPSE"] + ["SERSIC"] * len(dep.clumps),
    }
    fwhm_true = {b: fwhm[b] * dep.fwhm_scale[b] for b in BANDS}
    bands = {b: _band_model(b, fwhm_true[b], s, kwargs_model, dep) for b in BANDS}

    # Source: a blue compact galaxy inside the caustics, redrawn until magnified enough.
    magnification = 0.0
    if is_lens:
        probe_model = ImageModel(
            bands["g"][1].Data,
            bands["g"][1].PSF,
            LensModel(kwargs_model["lens_model_list"]),
            source_model_class=LightModel(["SERSIC_ELLIPSE"]),
            kwargs_numerics=PROBE_NUMERICS,
        )
        reach = 0.5 * theta_e
        for _ in range(20):
            angle, radius = rng.uniform(0, 2 * np.pi), reach * math.sqrt(rng.uniform())
            source["center_x"] = cx + radius * math.cos(angle)
            source["center_y"] = cy + radius * math.sin(angle)
            probe = [dict(source, amp=1.0)]
            lensed = probe_model.source_surface_brightness(probe, kwargs_lens, unconvolved=True)
            unlensed = probe_model.source_surface_brightness(
                probe, kwargs_lens, unconvolved=True, de_lensed=True
            )
            magnification = float(lensed.sum() / unlensed.sum())
            if magnification >= s.min_magnification:
                break
            reach *= 0.8
    src_mag = {"g": lensed_mag_g + 2.5 * math.log10(max(magnification, 1e-3))}
    src_mag["r"] = src_mag["g"] - src_colour[0]
    src_mag["i"] = src_mag["r"] - src_colour[1]

    images = np.empty((3, s.num_pix, s.num_pix), dtype=np.float32)
    snr = np.zeros((3, s.num_pix, s.num_pix))  # arcs, lens light, interlopers
    noise_rms = {}
    for k, band in enumerate(BANDS):
        sim, model = bands[band]
        light_mag = _lens_light_magnitudes(lens_light_parts, lens_mag, dep, band)
        light_mag += [dict(kw, magnitude=mags[band]) for kw, mags in interlopers]
        kwargs_light, kwargs_source, _ = sim.magnitude2amplitude(
            light_mag, _source_magnitudes(source, src_mag[band], dep) if is_lens else None
        )
        n_lens = len(lens_light_parts)
        lens_img = sum(model.lens_surface_brightness(kwargs_light, k=j) for j in range(n_lens))
        other_img = sum(
            (
                model.lens_surface_brightness(kwargs_light, k=j)
                for j in range(n_lens, len(kwargs_light))
            ),
            np.zeros_like(lens_img),
        )
        arc_img = (
            model.source_surface_brightness(kwargs_source, kwargs_lens)
            if is_lens
            else np.zeros_like(lens_img)
        )
        clean = lens_img + other_img + arc_img
        white = correlated(rng.standard_normal(clean.shape), dep.noise_correlation_px)
        noisy = clean + (0 if s.noiseless else white * sim.estimate_noise(np.maximum(clean, 0)))
        to_zp = 10 ** (0.4 * (s.magzero - DES_BANDS[band]["magnitude_zero_point"]))
        images[k] = noisy * to_zp
        sigma = sim.background_noise
        noise_rms[band] = float(sigma * to_zp)
        for c, component in enumerate((arc_img, lens_img, other_img)):
            snr[c] += component / sigma
    snr /= math.sqrt(3)
    labels = _labels(*snr)

    truth: dict[str, float | int | bool] = {
        "IS_LENS": is_lens,
        "THETA_E": theta_e if is_lens else 0.0,
        "CENTER_X": cx,
        "CENTER_Y": cy,
        "E1": e1,
        "E2": e2,
        "GAMMA1": gamma1,
        "GAMMA2": gamma2,
        "LENS_R_SERSIC": lens_light["R_sersic"],
        "LENS_N_SERSIC": lens_light["n_sersic"],
        "LENS_E1": lens_light["e1"],
        "LENS_E2": lens_light["e2"],
        **{f"LENS_MAG_{b.upper()}": lens_mag[b] for b in BANDS},
        "SRC_X": source.get("center_x", np.nan) if is_lens else np.nan,
        "SRC_Y": source.get("center_y", np.nan) if is_lens else np.nan,
        "SRC_R_SERSIC": source["R_sersic"],
        "SRC_N_SERSIC": source["n_sersic"],
        "SRC_E1": source["e1"],
        "SRC_E2": source["e2"],
        **{f"SRC_MAG_{b.upper()}": src_mag[b] if is_lens else np.nan for b in BANDS},
        "LENSED_MAG_G": lensed_mag_g if is_lens else np.nan,
        "MAGNIFICATION": magnification if is_lens else np.nan,
        "N_INTERLOPERS": len(interlopers),
        **{f"FWHM_{b.upper()}": fwhm[b] for b in BANDS},
        **{f"NOISE_{b.upper()}": noise_rms[b] for b in BANDS},
        "MODEL_BREAKING": s.model_breaking,
        "SLOPE": dep.slope,
        "PSF_BETA": dep.psf_beta if math.isfinite(dep.psf_beta) else 0.0,
        # The fit's PSF wing share: none for a Gaussian PSF; a Moffat has no exact value.
        "PSF_WING": 0.0 if not math.isfinite(dep.psf_beta) else np.nan,
        **{f"FWHM_TRUE_{b.upper()}": fwhm_true[b] for b in BANDS},
        "N_CLUMPS": len(dep.clumps),
        "CLUMP_SHARE": dep.clump_share,
        "BULGE_SHARE": dep.bulge_share,
        "NOISE_CORR_PX": dep.noise_correlation_px,
    }
    return SimulatedSystem(images=images, labels=labels, truth=truth)


def _lens_light_magnitudes(
    parts: list[dict], mags: dict[str, float], dep: Departures, band: str
) -> list[dict]:
    """The lens light's components with magnitudes: one Sersic, or a bulge and a bluer disk
    (its share of the r-band light ``1 - bulge_share``)."""
    if len(parts) == 1:
        return [dict(parts[0], magnitude=mags[band])]
    bluer = {"g": -dep.disk_blue, "r": 0.0, "i": dep.disk_blue}[band]
    bulge = mags[band] - 2.5 * math.log10(dep.bulge_share)
    disk = mags[band] - 2.5 * math.log10(1 - dep.bulge_share) + bluer
    return [dict(parts[0], magnitude=bulge), dict(parts[1], magnitude=disk)]


def _source_magnitudes(source: dict, mag: float, dep: Departures) -> list[dict]:
    """The source's Sersic and its clumps, sharing ``mag``'s flux."""
    if not dep.clumps:
        return [dict(source, magnitude=mag)]
    main = [dict(source, magnitude=mag - 2.5 * math.log10(1 - dep.clump_share))]
    return main + [
        {
            "R_sersic": r,
            "n_sersic": 1.0,
            "center_x": source["center_x"] + dx,
            "center_y": source["center_y"] + dy,
            "magnitude": mag - 2.5 * math.log10(share),
        }
        for dx, dy, r, share in dep.clumps
    ]


def _labels(s_arcs: np.ndarray, s_lens: np.ndarray, s_other: np.ndarray) -> np.ndarray:
    """Segmentation classes from per-component S/N maps (rules in the module docstring)."""
    labels = np.full(s_arcs.shape, BACKGROUND, dtype=np.uint8)
    labels[s_lens >= LABEL_SNR] = LENS_LIGHT
    labels[(s_other >= LABEL_SNR) & (s_other >= s_lens)] = OTHER
    arcs = (s_arcs >= LABEL_SNR) & (s_arcs >= ARC_CONTRAST * np.maximum(s_lens, s_other))
    labels[arcs] = ARCS
    return labels


def _simulate_task(task: tuple[np.random.SeedSequence, SimulationSettings]) -> SimulatedSystem:
    return simulate_system(*task)


def simulate_systems(
    n: int, seed: int, settings: SimulationSettings, workers: int | None = None
) -> Iterator[SimulatedSystem]:
    """Systems 0..n-1 in order, rendered by ``workers`` processes (default: all cores)."""
    tasks = [(child, settings) for child in np.random.SeedSequence(seed).spawn(n)]
    workers = min(workers or os.cpu_count() or 1, max(n // 8, 1))
    if workers == 1:
        yield from map(_simulate_task, tasks)
        return
    # spawn: the workers inherit no threads (a progress bar's, JAX's), and unlike forkserver
    # it needs no socket in $TMPDIR, whose path can be too long for one.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_simulate_task, tasks, chunksize=8)


def simulate_catalog(
    out: str | os.PathLike[str],
    n: int,
    seed: int,
    settings: SimulationSettings | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    broken: int = 0,
) -> Path:
    """Simulate ``n`` systems into a candidate catalogue with TRUTH and LABELS extensions.
    The last ``broken`` cutouts get a patch of NaN pixels in r, as a bad CCD region leaves,
    to show (and test) how a run skips and reports them."""
    s = settings or SimulationSettings()
    images = np.empty((n, 3, s.num_pix, s.num_pix), dtype=np.float32)
    labels = np.empty((n, s.num_pix, s.num_pix), dtype=np.uint8)
    truths = []
    for k, system in enumerate(simulate_systems(n, seed, s, workers)):
        images[k], labels[k] = system.images, system.labels
        truths.append(system.truth)
        if progress:
            progress(1)

    images[n - broken :, 1, 5:15, 5:25] = np.nan
    ids = [f"sim{seed}_{k:06d}" for k in range(n)]
    rng = np.random.default_rng([seed, n])
    catalog = Table(
        {
            "COADD_OBJECT_ID": ids,
            "RA": rng.uniform(0, 360, n),
            "DEC": rng.uniform(-60, 0, n),
            "TILENAME": ["SIMULATED"] * n,
            **{f"FWHM_WMEAN_{b.upper()}": [t[f"FWHM_{b.upper()}"] for t in truths] for b in BANDS},
        }
    )
    truth = Table(rows=truths, names=list(truths[0])) if truths else Table()
    truth.add_column(ids, name="COADD_OBJECT_ID", index=0)
    truth_hdu = fits.BinTableHDU(truth, name="TRUTH")
    label_hdu = fits.ImageHDU(labels, name="LABELS")
    label_hdu.header["LABSNR"] = (LABEL_SNR, "min noise-weighted S/N of a labelled pixel")
    for c, name in enumerate(CLASS_NAMES):
        label_hdu.header[f"CLASS{c}"] = name
    return write_catalog(
        out,
        images,
        catalog,
        pixscale=s.pixscale,
        magzero=s.magzero,
        extra_hdus=[truth_hdu, label_hdu],
        primary_cards={"SIMSEED": (seed, "lensjobs simulate --seed"), "SIMN": n},
    )
