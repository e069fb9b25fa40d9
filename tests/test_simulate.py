from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import run_cli

from lensjobs.catalog import open_catalog
from lensjobs.frame import angle_to_pixel
from lensjobs.simulate import (
    ARCS,
    BACKGROUND,
    LENS_LIGHT,
    OTHER,
    SimulationSettings,
    correlated,
    moffat_kernel,
    simulate_catalog,
    simulate_system,
)

SETTINGS = SimulationSettings()


def systems(n: int, seed: int, settings: SimulationSettings = SETTINGS):
    return [simulate_system(s, settings) for s in np.random.SeedSequence(seed).spawn(n)]


def test_file_layout_truth_and_labels(sim_file: Path) -> None:
    with fits.open(sim_file) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGES", "CATALOG", "TRUTH", "LABELS"]
        images, labels, truth = hdul["IMAGES"].data, hdul["LABELS"].data, hdul["TRUTH"].data
        assert images.shape == (24, 3, 45, 45) and images.dtype.kind == "f"
        assert labels.shape == (24, 45, 45) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {ARCS, LENS_LIGHT, OTHER, BACKGROUND}
        for column in (
            "THETA_E",
            "CENTER_X",
            "CENTER_Y",
            "E1",
            "E2",
            "GAMMA1",
            "GAMMA2",
            "SRC_X",
            "SRC_R_SERSIC",
            "IS_LENS",
            "FWHM_G",
            "FWHM_R",
            "FWHM_I",
        ):
            assert column in truth.columns.names
        lenses = truth["IS_LENS"]
        assert lenses.any() and not lenses.all()
        assert np.all(truth["MAGNIFICATION"][lenses] >= 3.6)
        assert np.all(
            (truth["LENSED_MAG_G"][lenses] >= 19.2) & (truth["LENSED_MAG_G"][lenses] <= 22.6)
        )
        assert np.all(truth["THETA_E"][~lenses] == 0)
        # Non-lenses have no arcs; lenses do.
        arc_pixels = (labels == ARCS).sum(axis=(1, 2))
        assert np.all(arc_pixels[~lenses] == 0)
        assert np.median(arc_pixels[lenses]) > 20
    with open_catalog(sim_file) as cat:
        assert cat.fwhm_source == "catalogue columns FWHM_WMEAN_G/R/I"
        assert cat.scan() == []


def test_same_seed_same_file_whatever_the_workers(tmp_path: Path, sim_file: Path) -> None:
    again = simulate_catalog(tmp_path / "again.fits", 24, seed=7, workers=1)
    other = simulate_catalog(tmp_path / "other.fits", 24, seed=8, workers=1)
    with fits.open(sim_file) as a, fits.open(again) as b, fits.open(other) as c:
        for name in ("IMAGES", "LABELS"):
            np.testing.assert_array_equal(a[name].data, b[name].data)
        assert not np.array_equal(a["IMAGES"].data, c["IMAGES"].data)


def test_labels_follow_the_geometry() -> None:
    """Arcs lie near the Einstein radius, lens light at the centre, interlopers apart."""
    s = SETTINGS.model_copy(update={"nonlens_frac": 0.0, "theta_e": (1.5, 2.5)})
    for system in systems(12, seed=3, settings=s):
        t = system.truth
        col, row = angle_to_pixel(t["CENTER_X"], t["CENTER_Y"], s.num_pix, s.pixscale)
        rows, cols = np.indices(system.labels.shape)
        radius = np.hypot(cols - col, rows - row) * s.pixscale
        arcs = system.labels == ARCS
        assert arcs.sum() > 0
        assert abs(np.median(radius[arcs]) - t["THETA_E"]) < 0.45 * t["THETA_E"]
        assert system.labels[round(row), round(col)] in (LENS_LIGHT, ARCS)
        if (system.labels == OTHER).any():
            assert np.median(radius[system.labels == OTHER]) > t["THETA_E"] + 1.0


def test_lens_off_centre_lands_at_the_right_pixel() -> None:
    """Frame: x runs along columns, y along rows, (0, 0) at the cutout centre."""
    s = SETTINGS.model_copy(update={"centre_max": 1.6, "max_interlopers": 0, "nonlens_frac": 1.0})
    checked = 0
    for system in systems(10, seed=11, settings=s):
        t = system.truth
        if abs(t["CENTER_X"] - t["CENTER_Y"]) < 0.8:
            continue  # a swap of x and y would go unnoticed
        col, row = angle_to_pixel(t["CENTER_X"], t["CENTER_Y"], s.num_pix, s.pixscale)
        light = np.where(system.labels == LENS_LIGHT, system.images.sum(axis=0), 0.0).clip(0)
        rows, cols = np.indices(light.shape)
        centroid = (light * cols).sum() / light.sum(), (light * rows).sum() / light.sum()
        assert centroid == pytest.approx((col, row), abs=0.7)
        checked += 1
    assert checked >= 3


def test_noise_matches_the_recorded_background_rms() -> None:
    for system in systems(4, seed=5):
        background = system.labels == BACKGROUND
        for k, band in enumerate("GRI"):
            rms = system.truth[f"NOISE_{band}"]
            measured = np.std(system.images[k][background])
            assert measured == pytest.approx(rms, rel=0.25)
            assert 0.5 < rms < 10  # coadd flux units at zero point 30


def test_nonlens_fraction_is_honoured() -> None:
    s = SETTINGS.model_copy(update={"nonlens_frac": 1.0})
    assert not any(x.truth["IS_LENS"] for x in systems(4, seed=2, settings=s))
    s = SETTINGS.model_copy(update={"nonlens_frac": 0.0})
    assert all(x.truth["IS_LENS"] for x in systems(4, seed=2, settings=s))


def test_cli_simulate_then_validate(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "sim.fits"
    result = run_cli("simulate", "--n", "6", "--seed", "1", "--out", out, "--nonlens-frac", "0.5")
    assert result.returncode == 0, result.stderr
    assert f"wrote 6 systems (seed 1) to {out}" in result.stdout
    check = run_cli("validate", out)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().splitlines()[-1] == "ok: 6 candidate(s) ready"
    assert sorted(p.name for p in out.parent.iterdir()) == ["sim.fits"]


def test_cli_simulate_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("simulate", "--n", "1", "--out", blocker / "sim.fits")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {blocker / 'sim.fits'}: cannot write (")
    )


BREAKING = SimulationSettings(nonlens_frac=0.0, model_breaking=True)
PLAIN_TRUTH = ("THETA_E", "CENTER_X", "E1", "GAMMA2", "SRC_X", "SRC_R_SERSIC", "LENS_MAG_R")


def test_model_breaking_departs_only_in_its_own_draws() -> None:
    """The same seed gives the same lens, light and source draws with or without the
    departures; only the departures differ, and each is recorded."""
    plain = systems(8, 5, BREAKING.model_copy(update={"model_breaking": False}))
    broken = systems(8, 5, BREAKING)
    for a, b in zip(plain, broken, strict=True):
        assert all(a.truth[c] == b.truth[c] for c in PLAIN_TRUTH)
        assert not np.allclose(a.images, b.images)
        assert (a.truth["SLOPE"], a.truth["N_CLUMPS"], a.truth["BULGE_SHARE"]) == (2.0, 0, 1.0)
        assert a.truth["PSF_BETA"] == 0 and a.truth["NOISE_CORR_PX"] == 0
        assert 1.8 <= b.truth["SLOPE"] <= 2.2 and 2.5 <= b.truth["PSF_BETA"] <= 4.5
        assert 0.3 <= b.truth["BULGE_SHARE"] <= 0.9 and 0.3 <= b.truth["NOISE_CORR_PX"] <= 0.7
        for band in "GRI":
            ratio = b.truth[f"FWHM_TRUE_{band}"] / b.truth[f"FWHM_{band}"]
            assert 0.9 <= ratio <= 1.1 and a.truth[f"FWHM_TRUE_{band}"] == a.truth[f"FWHM_{band}"]
        assert b.truth["N_CLUMPS"] == 0 or 0.2 <= b.truth["CLUMP_SHARE"] <= 0.5
    assert {b.truth["N_CLUMPS"] for b in broken} - {0}  # some sources are clumpy


def test_moffat_psf_has_its_fwhm_and_wings() -> None:
    fwhm, pixscale, sub = 1.0, 0.2637, 8
    kernel = moffat_kernel(fwhm, 2.5, pixscale, sub)
    half = kernel.shape[0] // 2
    profile = kernel[half, half:] / kernel[half, half]
    r = np.arange(len(profile)) * pixscale / sub
    measured = 2 * np.interp(0.5, profile[::-1], r[::-1])
    assert measured == pytest.approx(fwhm, rel=0.02)
    assert kernel.sum() == pytest.approx(1.0)
    # Wings: light beyond 1.5 FWHM, where a Gaussian of that FWHM has almost none.
    radius = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1]) * pixscale / sub
    assert kernel[radius > 1.5 * fwhm].sum() > 0.05


def test_correlated_noise_keeps_its_rms_and_correlates_neighbours() -> None:
    white = np.random.default_rng(0).standard_normal((200, 200))
    smooth = correlated(white, 0.6)
    assert smooth.std() == pytest.approx(1.0, rel=0.05)
    neighbours = np.corrcoef(smooth[:, :-1].ravel(), smooth[:, 1:].ravel())[0, 1]
    assert neighbours > 0.4
    assert abs(np.corrcoef(white[:, :-1].ravel(), white[:, 1:].ravel())[0, 1]) < 0.05


def test_cli_model_breaking(tmp_path: Path) -> None:
    out = tmp_path / "broken.fits"
    result = run_cli("simulate", "--n", "3", "--seed", "4", "--model-breaking", "--out", out)
    assert result.returncode == 0, result.stderr
    with fits.open(out) as hdul:
        truth = hdul["TRUTH"].data
        assert all(truth["MODEL_BREAKING"]) and all(truth["PSF_BETA"] > 0)
