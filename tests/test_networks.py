"""The networks on tiny architectures trained for one epoch, and the infer node."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from conftest import run_cli
from lenstronomy.LightModel.light_model import LightModel

from lensjobs.catalog import write_catalog
from lensjobs.fit.inputs import read_candidate
from lensjobs.frame import pixel_grid, pixel_to_angle
from lensjobs.models import regressor, segmenter
from lensjobs.models.dihedral import ORIENTATIONS, dihedral, dihedral_targets, inverse
from lensjobs.models.inputs import coordinate_channels, normalise
from lensjobs.models.store import load_model
from lensjobs.train import (
    ONE_SIGMA,
    SYMMETRIC_TARGETS,
    RegressorTask,
    TrainingDataError,
    TrainSettings,
    load_simulated,
    train,
)

TINY = {
    "segmenter": {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 8]},
    "regressor": {"model_name": "test_efficientnet"},
}


def train_tiny(kind: str, data: Path, out: Path, seed: int = 0):
    settings = TrainSettings(epochs=1, batch_size=8, seed=seed, architecture=TINY[kind])
    return train(kind, [data], data, out, settings)


@pytest.fixture(scope="module")
def tiny_weights(sim_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("weights")
    train_tiny("segmenter", sim_file, out)
    train_tiny("regressor", sim_file, out)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_writes_safetensors_and_a_model_card(
    tiny_weights: Path, sim_file: Path, tmp_path: Path
) -> None:
    for kind in ("segmenter", "regressor"):
        _model, card = load_model(
            kind, segmenter.build if kind == "segmenter" else regressor.build, tiny_weights
        )
        assert card.kind == kind
        assert card.training["n_systems"] == 24
        assert card.training["seed"] == 0
        assert card.normalisation.startswith("per band: asinh")
        assert card.weights_sha256 == sha256(tiny_weights / f"{kind}.safetensors")
    # The card's scores are the network's on its test set (here the training file),
    # recomputed from its own predictions.
    seg, seg_card = load_model("segmenter", segmenter.build, tiny_weights)
    with fits.open(sim_file) as hdul:
        x = normalise(np.asarray(hdul["IMAGES"].data, dtype=np.float32))
        labels = np.asarray(hdul["LABELS"].data)
    with torch.inference_mode():
        pred = segmenter.probabilities(seg, x, seg_card).argmax(1).numpy()
    iou = [
        ((pred == c) & (labels == c)).sum() / ((pred == c) | (labels == c)).sum() for c in range(4)
    ]
    assert seg_card.metrics["iou_per_class"] == pytest.approx(iou, abs=1e-9)
    assert seg_card.metrics["mean_iou"] == pytest.approx(np.mean(iou), abs=1e-9)
    reg_card = load_model("regressor", regressor.build, tiny_weights)[1]
    assert reg_card.targets == ["theta_E", "center_x", "center_y", "e1", "e2"]
    assert set(reg_card.metrics["within_1sigma"]) == set(reg_card.targets)
    # Deterministic for a seed.
    train_tiny("regressor", sim_file, tmp_path)
    assert sha256(tmp_path / "regressor.safetensors") == reg_card.weights_sha256


def test_shapes_and_uncertainties(tiny_weights: Path, sim_file: Path) -> None:
    with fits.open(sim_file) as hdul:
        x = normalise(np.asarray(hdul["IMAGES"].data[:5], dtype=np.float32))
    seg, seg_card = load_model("segmenter", segmenter.build, tiny_weights)
    reg, reg_card = load_model("regressor", regressor.build, tiny_weights)
    with torch.inference_mode():
        assert segmenter.logits(seg, x, seg_card).shape == (5, 4, 45, 45)
        mean, sigma = regressor.predict(reg, x, reg_card)
    assert mean.shape == sigma.shape == (5, 5)
    assert torch.all(sigma > 0)


def test_calibrated_sigmas_hold_68_percent_of_the_truths(tiny_weights: Path, sim_file: Path):
    model, card = load_model("regressor", regressor.build, tiny_weights)
    data = load_simulated(sim_file)
    task = RegressorTask()
    rows = task.rows(data)
    raw = task.evaluate(model, card.model_copy(update={"sigma_scale": []}), data, rows)
    calibrated = task.calibrate(model, card, data, rows)
    assert len(calibrated.sigma_scale) == len(card.targets)
    within = task.evaluate(model, calibrated, data, rows)["within_1sigma"]
    for group in SYMMETRIC_TARGETS:
        # A one-epoch network's raw sigmas are far off; the factor brings each target (each
        # pair that trades places when a cutout turns) to 68.3 % of these truths within
        # 1 sigma, to one lens.
        names = [card.targets[j] for j in group]
        assert len({calibrated.sigma_scale[j] for j in group}) == 1, names
        share = np.mean([within[name] for name in names])
        assert abs(share - ONE_SIGMA) <= 1.5 / (len(rows) * len(group)), names
    assert any(abs(raw["within_1sigma"][t] - ONE_SIGMA) > 2 / len(rows) for t in card.targets)


def test_fine_tuning_on_two_files_keeps_the_cards_normalisation(
    tiny_weights: Path, sim_file: Path, tmp_path: Path
) -> None:
    start = load_model("regressor", regressor.build, tiny_weights)[1]
    settings = TrainSettings(epochs=1, batch_size=8)
    card = train("regressor", [sim_file, sim_file], None, tmp_path, settings, init=tiny_weights)
    assert card.training["n_systems"] == 48
    assert card.training["init"] == tiny_weights.name
    assert card.kwargs == TINY["regressor"]
    assert card.target_scale == start.target_scale
    assert card.weights_sha256 != start.weights_sha256
    # A directory without a regressor to start from: one line, no traceback.
    with pytest.raises(TrainingDataError, match="no model card"):
        train("regressor", [sim_file], None, tmp_path, settings, init=tmp_path / "none")


def test_zero_epochs_recalibrate_the_weights_as_they_are(
    tiny_weights: Path, sim_file: Path, tmp_path: Path
) -> None:
    trained = load_model("regressor", regressor.build, tiny_weights)[1]
    # The weights with their calibration and scores taken away: --epochs 0 must redo both.
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    shutil.copy(tiny_weights / "regressor.safetensors", stripped)
    bare = trained.model_copy(update={"sigma_scale": [1.0] * 5, "metrics": {}})
    (stripped / "regressor.json").write_text(json.dumps(bare.model_dump()))
    settings = TrainSettings(epochs=0, batch_size=8)
    card = train("regressor", [sim_file], sim_file, tmp_path, settings, init=stripped)
    assert card.weights_sha256 == trained.weights_sha256
    # The same data and seed: the same validation split, the same calibration.
    assert card.sigma_scale == pytest.approx(trained.sigma_scale, abs=1e-4)
    assert card.training["recalibrated"]["n_val"] == trained.training["n_val"]
    assert card.training["best_epoch"] == trained.training["best_epoch"]
    assert card.metrics["median_centre_error"] == trained.metrics["median_centre_error"]
    with pytest.raises(TrainingDataError, match="name them with --init"):
        train("regressor", [sim_file], None, tmp_path, settings)


@pytest.mark.parametrize("k", range(8))
def test_dihedral_targets_follow_the_image(k: int) -> None:
    """Render an elliptical galaxy, move the image, and compare with moved parameters."""
    grid = pixel_grid(45, 0.2637)
    col, row = np.meshgrid(np.arange(45), np.arange(45))
    x, y = pixel_to_angle(col, row, 45, 0.2637)
    assert grid["ra_at_xy_0"] == pytest.approx(x[0, 0])
    light = LightModel(["SERSIC_ELLIPSE"])

    def render(p: torch.Tensor) -> torch.Tensor:
        kwargs = {
            "amp": 1.0,
            "R_sersic": 1.0,
            "n_sersic": 1.5,
            "center_x": float(p[1]),
            "center_y": float(p[2]),
            "e1": float(p[3]),
            "e2": float(p[4]),
        }
        return torch.from_numpy(light.surface_brightness(x, y, [kwargs]))

    params = torch.tensor([1.0, 0.7, -0.4, 0.25, 0.12], dtype=torch.float64)
    moved = dihedral(render(params), k)
    expected = render(dihedral_targets(params, k))
    assert torch.allclose(moved, expected, rtol=1e-9, atol=1e-12)


def test_inverse_undoes_each_orientation() -> None:
    image = torch.arange(9.0).reshape(3, 3)
    moved = {k: dihedral(image, k) for k in ORIENTATIONS}
    assert len({tuple(m.flatten().tolist()) for m in moved.values()}) == 8
    for k in ORIENTATIONS:
        assert torch.equal(dihedral(moved[k], inverse(k)), image), k


def test_networks_follow_the_cutout_when_it_turns(tiny_weights: Path, sim_file: Path) -> None:
    """Averaged over the 8 orientations, a network's prediction for a turned cutout is its
    prediction for the cutout, turned: no orientation has a bias of its own. A single
    orientation's is not (checked too, so that the test can tell)."""
    with fits.open(sim_file) as hdul:
        x = normalise(np.asarray(hdul["IMAGES"].data[:6], dtype=np.float32))
    seg, seg_card = load_model("segmenter", segmenter.build, tiny_weights)
    reg, reg_card = load_model("regressor", regressor.build, tiny_weights)
    with torch.inference_mode():
        probs = segmenter.probabilities(seg, x, seg_card)
        mean, sigma = regressor.predict(reg, x, reg_card)
        for k in (1, 4, 6):
            turned = dihedral(x, k)
            assert torch.allclose(
                segmenter.probabilities(seg, turned, seg_card), dihedral(probs, k), atol=1e-5
            )
            turned_mean, turned_sigma = regressor.predict(reg, turned, reg_card)
            assert torch.allclose(turned_mean, dihedral_targets(mean, k), atol=1e-5)
            assert torch.allclose(turned_sigma, dihedral_targets(sigma, k).abs(), atol=1e-5)
        single = regressor.raw_outputs(reg, dihedral(x, 4), reg_card)[0]
        assert not torch.allclose(
            dihedral_targets(single, 4), regressor.raw_outputs(reg, x, reg_card)[0], atol=1e-3
        )


def test_coordinate_channels_are_the_frame() -> None:
    grid = coordinate_channels(1, 45, 16, 0.2637, 1.0)[0]
    assert grid.shape == (2, 48, 48)
    # Padding is (1, 2): padded pixel (row 1 + 10, col 1 + 30) is cutout pixel (10, 30).
    x, y = pixel_to_angle(30, 10, 45, 0.2637)
    assert float(grid[0, 11, 31]) == pytest.approx(x, abs=1e-6)
    assert float(grid[1, 11, 31]) == pytest.approx(y, abs=1e-6)


def test_node_infer_writes_priors(tiny_weights: Path, sim_file: Path, tmp_path: Path) -> None:
    with fits.open(sim_file) as hdul:
        images = np.asarray(hdul["IMAGES"].data[:10], dtype=np.float32)
        table = hdul["CATALOG"].data[:10]
        truth = hdul["TRUTH"].data[:10]
    images[3, 0, 5, 5] = np.nan
    candidates = write_catalog(tmp_path / "c.fits", images, Table(table))
    result = run_cli(
        "node",
        "infer",
        candidates,
        "--out",
        tmp_path / "infer",
        "--weights",
        tiny_weights,
        "--batch-size",
        "4",
    )
    assert result.returncode == 0, result.stderr
    with fits.open(tmp_path / "infer" / "priors.fits") as hdul:
        priors = hdul["PRIORS"].data
        probs = hdul["PROBS"].data
    assert list(priors["COADD_OBJECT_ID"]) == list(table["COADD_OBJECT_ID"])
    assert probs.shape == (10, 4, 45, 45)
    assert not priors["USABLE"][3] and priors["PROBLEM"][3] == "1 NaN/Inf pixels"
    assert np.isnan(priors["THETA_E"][3])
    good = priors["USABLE"]
    assert good.sum() == 9
    np.testing.assert_allclose(probs[good].sum(axis=1), 1.0, atol=2e-3)
    assert np.all(priors["THETA_E_ERR"][good] > 0)
    for band in "GRI":
        ratio = priors[f"BKG_RMS_{band}"][good] / truth[f"NOISE_{band}"][good]
        assert np.all((ratio > 0.5) & (ratio < 2.0))  # untrained: plumbing only
    np.testing.assert_allclose(priors["FWHM_R"], table["FWHM_WMEAN_R"], rtol=1e-6)

    # The POST script's split: one fit input per usable candidate, readable by the fit node.
    split = run_cli(
        "node", "split", candidates, tmp_path / "infer" / "priors.fits", "--out", tmp_path / "nodes"
    )
    assert split.returncode == 0, split.stderr
    usable = [cid for k, cid in enumerate(table["COADD_OBJECT_ID"]) if k != 3]
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == sorted(usable)
    assert split.stdout.strip() == (
        f"wrote 9 fit inputs under {tmp_path / 'nodes'} (1 unusable cutout(s) skipped)"
    )
    assert split.stderr.startswith("splitting: 10/10 (100 %)")  # a log line, not a bar
    first = read_candidate(tmp_path / "nodes" / table["COADD_OBJECT_ID"][0] / "input.fits")
    np.testing.assert_array_equal(first.cutout, images[0])
    np.testing.assert_array_equal(first.classes, probs[0].argmax(axis=0))
    assert first.prior["THETA_E"] == pytest.approx(priors["THETA_E"][0])


def _expect_rejected(weights: Path, tmp_path: Path, sim_file: Path, message: str) -> None:
    result = run_cli("node", "infer", sim_file, "--out", tmp_path / "infer", "--weights", weights)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "infer").exists()


def test_corrupt_or_mismatched_weights_are_rejected(
    tiny_weights: Path, tmp_path: Path, sim_file: Path
) -> None:
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    target = weights / "segmenter.safetensors"
    target.write_bytes(target.read_bytes()[:1000])
    _expect_rejected(weights, tmp_path, sim_file, "segmenter.safetensors: checksum differs")

    card = weights / "segmenter.json"
    text = card.read_text()
    old = load_model("segmenter", segmenter.build, tiny_weights)[1].weights_sha256
    card.write_text(text.replace(old, sha256(target)))
    _expect_rejected(weights, tmp_path, sim_file, "not a readable safetensors file")

    shutil.copy(tiny_weights / "regressor.safetensors", target)
    card.write_text(text.replace(old, sha256(target)))
    _expect_rejected(weights, tmp_path, sim_file, "weights do not fit the architecture")
