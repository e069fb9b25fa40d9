"""The fit's JAX likelihood against lenstronomy's own, and the numerics it was chosen for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from lenstronomy.Workflow.fitting_sequence import FittingSequence
from scipy import ndimage

from lensjobs.fit import likelihood
from lensjobs.fit.inputs import Candidate
from lensjobs.fit.model import (
    FWHM_RANGE,
    KWARGS_MODEL,
    OTHER_WIDTHS,
    PSF_TRUNCATION,
    background_rms,
    exposure_times,
    likelihood_data,
    likelihood_mask,
    other_wings,
    psf_radius,
    start,
    to_kwargs,
    truth_vector,
)
from lensjobs.fit.node import Problem
from lensjobs.fit.presets import PRESETS
from lensjobs.frame import pixel_grid
from lensjobs.labels import BACKGROUND, OTHER
from lensjobs.simulate import SimulationSettings, simulate_system

# lenstronomy's parameters come first in NAMES, the PSF's (FWHM per band, wing) after them.
LENSTRONOMY = likelihood.INDEX["fwhm_g"]
FWHM = [likelihood.INDEX[f"fwhm_{b}"] for b in "gri"]


def _candidate(seed: int, settings: SimulationSettings) -> tuple[Candidate, np.ndarray]:
    system = simulate_system(np.random.SeedSequence(seed), settings)
    t = system.truth
    prior = {
        **{c: t[c] for c in ("THETA_E", "CENTER_X", "CENTER_Y", "E1", "E2")},
        **dict.fromkeys(("THETA_E_ERR", "E1_ERR", "E2_ERR"), 0.1),
        **dict.fromkeys(("CENTER_X_ERR", "CENTER_Y_ERR"), 0.05),
        **{f"BKG_RMS_{b}": t[f"NOISE_{b}"] for b in "GRI"},
    }
    fwhm = np.array([t[f"FWHM_{b}"] for b in "GRI"])
    candidate = Candidate(
        f"sim{seed}", system.images, fwhm, settings.pixscale, settings.magzero, prior, system.labels
    )
    return candidate, truth_vector(t)


def _lenstronomy_logl(candidate: Candidate, fwhm: np.ndarray, supersampling: int):
    """lenstronomy's FittingSequence likelihood of the same model, data, mask and PSF
    (lenstronomy's Gaussian reaches int(truncation x sigma + 0.5) pixels: as far as ours)."""
    grid = pixel_grid(candidate.num_pix, candidate.pixscale)
    radius = psf_radius(candidate)
    sigma_px = fwhm / likelihood.FWHM_PER_SIGMA / candidate.pixscale
    bands = [
        [
            {
                "image_data": candidate.cutout[k].astype(float),
                "background_rms": float(background_rms(candidate)[k]),
                "exposure_time": float(exposure_times(candidate)[k]),
                **grid,
            },
            {
                "psf_type": "GAUSSIAN",
                "fwhm": float(fwhm[k]),
                "truncation": (radius + 0.25) / sigma_px[k],
            },
            {"supersampling_factor": supersampling},
        ]
        for k in range(3)
    ]
    s = start(candidate)
    kwargs = {k: to_kwargs(getattr(s, k)) for k in ("init", "lower", "upper")}
    fixed = {"kwargs_lens": [{}, {"ra_0": 0.0, "dec_0": 0.0}], "kwargs_source": [{}, {}]}
    fixed["kwargs_lens_light"] = [{}]
    params = {
        kind: [
            kwargs["init"][key],
            kwargs["init"][key],
            fixed[key],
            kwargs["lower"][key],
            kwargs["upper"][key],
        ]
        for kind, key in (
            ("lens_model", "kwargs_lens"),
            ("source_model", "kwargs_source"),
            ("lens_light_model", "kwargs_lens_light"),
        )
    }
    mask = likelihood_mask(candidate)
    sequence = FittingSequence(
        {"multi_band_list": bands, "multi_band_type": "multi-linear"},
        KWARGS_MODEL,
        {"joint_lens_with_light": [[0, 0, ["center_x", "center_y"]]]},
        {"check_bounds": False, "image_likelihood_mask_list": [mask] * 3},
        params,
    )
    assert tuple(sequence.param_class.num_param()[1]) == likelihood.NAMES[:LENSTRONOMY]
    return lambda p: sequence.likelihood_class.logL(p[:LENSTRONOMY])


def _seed_with_interlopers(settings: SimulationSettings) -> int:
    return next(
        s
        for s in range(40)
        if simulate_system(np.random.SeedSequence(s), settings).truth["N_INTERLOPERS"]
    )


def _without_wings(data: likelihood.Data) -> likelihood.Data:
    return data._replace(
        others=data.others[:0],
        others_normal=data.others_normal[:, :0, :0],
        others_rhs=data.others_rhs[:, :0],
    )


@pytest.mark.parametrize("supersampling", [1, 3])
def test_jax_likelihood_is_lenstronomys(supersampling: int) -> None:
    """Same model, data, mask and numerics: the same log-likelihood, to 1e-8, at the truth
    and around it (a system with interlopers, so the mask is not empty)."""
    settings = SimulationSettings(nonlens_frac=0.0, shear_frac=1.0)
    seed = _seed_with_interlopers(settings)
    candidate, truth = _candidate(seed, settings)
    assert likelihood_mask(candidate).min() == 0
    data = likelihood_data(candidate, supersampling, core=0.0)  # lenstronomy's SIE and Sersic
    data = _without_wings(data)  # lenstronomy has no fixed images of other objects
    rng = np.random.default_rng(1)
    fwhm = truth[FWHM] * rng.uniform(0.9, 1.1, size=3)  # the PSF's FWHM is a parameter too
    reference = _lenstronomy_logl(candidate, fwhm, supersampling)
    points = [truth] + [truth + rng.normal(size=truth.size) * 0.02 for _ in range(4)]
    # No wing: lenstronomy's GAUSSIAN PSF.
    points = [np.concatenate([p[:LENSTRONOMY], fwhm, [0.0]]) for p in points]
    for p in points:
        assert float(likelihood.value(p, data)) == pytest.approx(reference(p), rel=1e-8, abs=1e-6)
    batch = np.asarray(likelihood.values(np.array(points), data))
    np.testing.assert_allclose(batch, [reference(p) for p in points], rtol=1e-8)


@pytest.mark.parametrize("wing", [0.0, 0.3, 0.7])
def test_psf_is_two_gaussians_of_the_fitted_fwhm(wing: float) -> None:
    """Each band's lens light and source are blurred by scipy's Gaussian filters of the
    core's and the wing's widths, mixed (1 - wing) : wing, and the two together fall to half
    their peak at half the fitted FWHM."""
    candidate, truth = _candidate(3, SimulationSettings(nonlens_frac=0.0))
    data = likelihood_data(candidate, 1)
    fwhm = np.array([1.1, 0.95, 0.85])
    p = truth.copy()
    p[[likelihood.INDEX[f"fwhm_{b}"] for b in "gri"]] = fwhm
    p[likelihood.INDEX["psf_wing"]] = wing
    units = np.asarray(likelihood.unit_images(p, data))
    parts, amplitudes = (np.asarray(a) for a in likelihood.components(p, data))
    core = np.asarray(likelihood.core_sigma(fwhm, wing))
    radius = psf_radius(candidate)
    for b in range(3):
        for c in range(len(units)):
            expected = sum(
                share
                * ndimage.gaussian_filter(
                    units[c], sigma / candidate.pixscale, mode="nearest", radius=radius
                )
                for share, sigma in ((1 - wing, core[b]), (wing, likelihood.WING_RATIO * core[b]))
            )
            np.testing.assert_allclose(
                parts[b, c], amplitudes[b, c] * expected, rtol=1e-9, atol=1e-12
            )

    def profile(r: np.ndarray) -> np.ndarray:
        return sum(
            share * np.exp(-0.5 * (r / sigma) ** 2) / sigma**2
            for share, sigma in ((1 - wing, core), (wing, likelihood.WING_RATIO * core))
        )

    np.testing.assert_allclose(profile(fwhm / 2), profile(np.zeros(3)) / 2, rtol=1e-9)


def test_candidates_of_similar_seeing_share_the_likelihoods_shapes() -> None:
    """A batch job compiles the likelihood once per array shape: candidates over DES's range
    of seeing (0.8-1.55") share a few shapes, and every PSF still reaches its truncation."""
    candidate, _ = _candidate(3, SimulationSettings(nonlens_frac=0.0))
    shapes = set()
    for fwhm in np.linspace(0.8, 1.55, 40):
        similar = dataclasses.replace(candidate, fwhm=np.array([fwhm, 0.9 * fwhm, 0.8 * fwhm]))
        wing = likelihood.WING_RATIO * FWHM_RANGE[1] * fwhm / likelihood.FWHM_PER_SIGMA
        assert psf_radius(similar) >= PSF_TRUNCATION * wing / candidate.pixscale
        shapes.add(likelihood_data(similar, 1).shifts.shape)
    assert len(shapes) <= 4, shapes


def test_gradient_matches_finite_differences() -> None:
    candidate, truth = _candidate(3, SimulationSettings(nonlens_frac=0.0, shear_frac=1.0))
    truth[likelihood.NAMES.index("psf_wing")] = 0.4  # inside its bounds: a gradient both ways
    data = likelihood_data(candidate, 3)
    _, grad = likelihood.value_and_grad(truth, data)
    step = 1e-6
    for k in range(truth.size):
        offset = np.zeros_like(truth)
        offset[k] = step
        numeric = (
            likelihood.value(truth + offset, data) - likelihood.value(truth - offset, data)
        ) / (2 * step)
        assert float(grad[k]) == pytest.approx(float(numeric), rel=1e-4, abs=1e-2), (
            likelihood.NAMES[k]
        )


@pytest.mark.parametrize("core", [None, 0.0])
def test_gradient_is_smooth_where_the_centre_meets_a_sample(core: float | None) -> None:
    """With the lens centre on a sub-pixel sample point, the gradient in the centre changes
    in proportion to a step across it with the fit's softened cores; with lenstronomy's
    singular ones (core 0) it does not. Steps of 1e-7 to 1e-5" see the SIE's deflection
    (lenstronomy's Sersic is flat inside 1e-4"), steps of 1e-4 to 1e-3" the Sersic cusp."""
    candidate, truth = _candidate(3, SimulationSettings(nonlens_frac=0.0, shear_frac=1.0))
    data = likelihood_data(candidate, 3, core)
    samples = np.asarray(data.x[0])
    k = likelihood.INDEX["center_x_lens_light0"]
    for name in ("center_x_lens_light0", "center_y_lens_light0"):
        c = likelihood.INDEX[name]
        truth[c] = samples[np.argmin(np.abs(samples - truth[c]))]

    def change(step: float) -> float:
        grads = [
            likelihood.value_and_grad(truth + sign * step * np.eye(truth.size)[k], data)[1]
            for sign in (-1, 1)
        ]
        return abs(float(grads[1][k] - grads[0][k]))

    ratio = change(1e-7) / change(1e-5)
    cusp = change(1e-4) / change(1e-3)
    if core is None:
        assert float(data.core) == pytest.approx(likelihood.CORE * candidate.pixscale / 3)
        assert ratio == pytest.approx(0.01, rel=0.1)
        assert cusp == pytest.approx(0.1, rel=0.1)
    else:
        assert ratio > 100
        assert cusp < 0.01


def test_noise_free_truth_beats_a_shifted_einstein_radius() -> None:
    """The preset's numerics are accurate enough that, on a noise-free system rendered far
    more finely, the truth scores better than theta_E moved by 1 %; at 1 sample per pixel it
    does not (benchmarks/supersampling_bias.py measures the bias; with the softened cores,
    2x2 passes on this system too)."""
    settings = SimulationSettings(
        nonlens_frac=0.0, max_interlopers=0, shear_frac=1.0, supersampling=16, noiseless=True
    )
    candidate, truth = _candidate(24, settings)
    k = likelihood.NAMES.index("theta_E_lens0")

    def margin(supersampling: int) -> float:
        problem = Problem(
            candidate, PRESETS["standard"].model_copy(update={"supersampling": supersampling})
        )
        shifted = [truth.copy(), truth.copy()]
        shifted[0][k] *= 1.01
        shifted[1][k] /= 1.01
        return problem.log_likelihood(truth) - max(problem.log_likelihood(p) for p in shifted)

    assert PRESETS["standard"].supersampling == 3
    assert margin(3) > 0
    assert margin(1) < 0


def test_log_prior_gradient_and_the_knot_following_the_source() -> None:
    """The prior's gradient is its finite differences (the knot's tie to the Sersic
    included), and moving the source's Sersic and knot together leaves the prior as it
    was, while moving the Sersic alone lowers it."""
    candidate, truth = _candidate(3, SimulationSettings(nonlens_frac=0.0))
    s = start(candidate)
    rng = np.random.default_rng(2)
    point = np.clip(truth + rng.normal(size=truth.size) * s.sigma, s.lower, s.upper)
    step = 1e-6
    numeric = [
        (s.log_prior(point + step * e) - s.log_prior(point - step * e)) / (2 * step)
        for e in np.eye(point.size)
    ]
    np.testing.assert_allclose(s.log_prior_gradient(point), numeric, rtol=1e-6, atol=1e-6)
    sersic = likelihood.INDEX["center_x_source_light0"]
    knot = likelihood.INDEX["center_x_source_light1"]
    point[knot] = point[sersic]
    together, alone = point.copy(), point.copy()
    together[[sersic, knot]] += 0.5
    alone[sersic] += 0.5
    assert s.log_prior(together) == pytest.approx(s.log_prior(point))
    assert s.log_prior(alone) < s.log_prior(point) - 1


def test_other_objects_wings_sit_on_them() -> None:
    """The wings' images peak at the flux centroid of the brightest other object, the next
    slot holds the next object, and slots without an object are zero placeholders."""
    n, pixscale = 45, 0.263
    cutout = np.zeros((3, n, n))
    classes = np.full((n, n), BACKGROUND, dtype=np.uint8)
    for (row, col), flux in (((10, 30), 5.0), ((35, 8), 1.0)):
        cutout[:, row - 1 : row + 2, col - 1 : col + 2] = flux
        classes[row - 2 : row + 3, col - 2 : col + 3] = OTHER
    fwhm = np.full(3, 1.0)
    wings = other_wings(Candidate("c", cutout, fwhm, pixscale, 30.0, {}, classes))
    per_object = len(OTHER_WIDTHS)
    peaks = [np.unravel_index(np.argmax(w), w.shape) for w in wings[::per_object][:2]]
    assert peaks == [(10, 30), (35, 8)]
    assert np.abs(wings[2 * per_object :]).sum() == 0
    assert np.all(wings[: 2 * per_object].sum(axis=(1, 2)) > 0)


def test_wings_fit_light_the_mask_leaves_and_placeholders_change_nothing() -> None:
    """Beside a system with other objects, the wings take up light past their mask: the
    truth scores better with them. Without other objects the placeholders change nothing."""
    settings = SimulationSettings(nonlens_frac=0.0, shear_frac=1.0)
    seed = _seed_with_interlopers(settings)
    candidate, truth = _candidate(seed, settings)
    data = likelihood_data(candidate, 3)
    with_wings = float(likelihood.value(truth, data))
    assert with_wings > float(likelihood.value(truth, _without_wings(data))) + 10
    # The amplitudes are the joint weighted least squares of the model's components and the
    # wings (the wings' block is precomputed and coupled to the rest): what the model leaves
    # is orthogonal to every wing, and a placeholder's amplitude is 0.
    parts, amplitudes = (np.asarray(a) for a in likelihood.components(truth, data))
    weight, others = np.asarray(data.weight), np.asarray(data.others)
    used = np.abs(others).sum(axis=(1, 2)) > 0
    assert used.any() and not used.all()
    for b in range(3):
        left = np.asarray(data.image[b]) - parts[b].sum(axis=0)
        norms = np.sqrt(np.einsum("kij,ij,kij->k", others, weight[b], others)[used])
        overlap = np.einsum("kij,ij,ij->k", others[used], weight[b], left)
        assert np.all(np.abs(overlap) <= 1e-8 * norms * np.sqrt(np.sum(weight[b] * left**2)))
        assert np.all(amplitudes[b, 3:][~used] == 0)

    candidate, truth = _candidate(3, SimulationSettings(nonlens_frac=0.0, max_interlopers=0))
    data = likelihood_data(candidate, 3)
    assert len(data.others) and not np.any(np.asarray(data.others))
    assert float(likelihood.value(truth, data)) == pytest.approx(
        float(likelihood.value(truth, _without_wings(data))), rel=1e-12
    )
