"""The released weights: they load offline and give sane predictions on new simulations."""

from __future__ import annotations

import numpy as np
import pytest

from lensjobs.infer import MIN_ARC_PIXELS, Networks
from lensjobs.models.inputs import normalise
from lensjobs.simulate import SimulationSettings, simulate_system

SEED = 424242  # not a training (1, 31, 32) or test (2, 33, 34) seed


@pytest.fixture(scope="module")
def networks(monkeypatch_module: pytest.MonkeyPatch) -> Networks:
    return Networks()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        # Nothing may be fetched at run time; make any attempt fail loudly.
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TORCH_HOME", "/nonexistent")
        yield patch


def predict(networks: Networks, settings: SimulationSettings, n: int):
    systems = [simulate_system(s, settings) for s in np.random.SeedSequence(SEED).spawn(n)]
    images = np.stack([s.images for s in systems])
    probs, mean, sigma = networks(normalise(images))
    return systems, probs, mean, sigma


def test_cards_record_the_quality_targets(networks: Networks) -> None:
    assert networks.seg_card.training["n_systems"] >= 20_000
    assert networks.reg_card.training["n_systems"] >= 20_000
    # Measured on held-out model-breaking lenses up to 1" off centre (BENCHMARKS.md).
    assert networks.seg_card.metrics["mean_iou"] >= 0.90
    assert networks.reg_card.metrics["median_abs_dtheta_E"] <= 0.10
    assert networks.reg_card.metrics["median_centre_error"] <= 0.07
    assert len(networks.reg_card.sigma_scale) == len(networks.reg_card.targets)
    within = networks.reg_card.metrics["within_1sigma"]
    assert all(0.60 <= within[t] <= 0.76 for t in networks.reg_card.targets), within


def test_theta_e_of_new_lenses(networks: Networks) -> None:
    settings = SimulationSettings(nonlens_frac=0.0)
    systems, probs, mean, _ = predict(networks, settings, 8)
    theta = np.array([s.truth["THETA_E"] for s in systems])
    assert np.all(np.abs(mean[:, 0] - theta) < 0.3), np.c_[theta, mean[:, 0]]
    arcs = (probs.argmax(1) == 0).sum(axis=(1, 2))
    assert np.all(arcs >= MIN_ARC_PIXELS)


def test_off_centre_lens_is_placed_at_its_x_and_y(networks: Networks) -> None:
    """Within the trained range (lens within 1" of the cutout centre per axis)."""
    settings = SimulationSettings(nonlens_frac=0.0, theta_e=(1.2, 2.5), centre_max=1.0)
    systems, _, mean, _ = predict(networks, settings, 16)
    truth = np.array([[s.truth["CENTER_X"], s.truth["CENTER_Y"]] for s in systems])
    far = np.abs(truth[:, 0] - truth[:, 1]) > 0.4  # where a swap of x and y would show
    assert far.sum() >= 3 and np.abs(truth).max() > 0.8
    error = np.hypot(*(mean[:, 1:3] - truth).T)
    # A swap of x and y would be off by > 0.4 * sqrt(2) = 0.57".
    assert np.median(error[far]) < 0.06, np.c_[truth, mean[:, 1:3]]
    assert np.all(error[far] < 0.25), np.c_[truth, mean[:, 1:3]]


def test_non_lenses_are_flagged(networks: Networks) -> None:
    settings = SimulationSettings(nonlens_frac=1.0)
    _, probs, _, _ = predict(networks, settings, 8)
    arcs = (probs.argmax(1) == 0).sum(axis=(1, 2))
    assert np.mean(arcs < MIN_ARC_PIXELS) >= 0.75, arcs
