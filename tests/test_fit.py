"""The fit node with the quick preset on simulated lenses (priors from the truth, so these
tests do not depend on the networks)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import run_cli

from lensjobs.fit.batch import run_batch
from lensjobs.fit.inputs import Candidate, read_candidate, write_candidate
from lensjobs.fit.likelihood import NAMES
from lensjobs.fit.model import LENS_PARAMETERS
from lensjobs.fit.node import EXIT_BAD_INPUT, EXIT_CHECKPOINT, EXIT_DONE, Problem, run_fit
from lensjobs.fit.presets import PRESETS
from lensjobs.simulate import SimulationSettings, simulate_system


def simulated_input(
    tmp: Path,
    seed: int,
    settings: SimulationSettings,
    *,
    prior_centre=None,
    centre_sigma: float = 0.05,
    **prior_updates: object,
) -> tuple[Path, dict]:
    """A fit input for a simulated lens, priors near the truth (the regressor's job)."""
    system = simulate_system(np.random.SeedSequence(seed), settings)
    t = system.truth
    cx, cy = prior_centre if prior_centre is not None else (t["CENTER_X"], t["CENTER_Y"])
    prior = {
        "THETA_E": t["THETA_E"] * 1.05,
        "THETA_E_ERR": 0.1,
        "CENTER_X": cx,
        "CENTER_X_ERR": centre_sigma,
        "CENTER_Y": cy,
        "CENTER_Y_ERR": centre_sigma,
        "E1": t["E1"],
        "E1_ERR": 0.1,
        "E2": t["E2"],
        "E2_ERR": 0.1,
        **{f"BKG_RMS_{b}": t[f"NOISE_{b}"] for b in "GRI"},
        **{f"FWHM_{b}": t[f"FWHM_{b}"] for b in "GRI"},
        "NO_ARCS": False,
        "USABLE": True,
        "PROBLEM": "",
    }
    prior.update(prior_updates)
    candidate = Candidate(
        id=f"sim{seed}",
        cutout=system.images,
        fwhm=np.array([t["FWHM_G"], t["FWHM_R"], t["FWHM_I"]]),
        pixscale=settings.pixscale,
        magzero=settings.magzero,
        prior=prior,
        classes=system.labels,
    )
    return write_candidate(tmp / f"sim{seed}" / "input.fits", candidate), t


LENSES = SimulationSettings(nonlens_frac=0.0, theta_e=(1.0, 2.2), shear_frac=0.0)


@pytest.fixture(scope="module")
def quick_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("fit")
    path, truth = simulated_input(tmp, 1, LENSES)
    assert run_fit(path, tmp / "out", "quick") == EXIT_DONE
    return tmp / "out", truth


def test_outputs_exist_and_parse(quick_fit: tuple[Path, dict]) -> None:
    out, _ = quick_fit
    params = json.loads((out / "params.json").read_text())
    assert params["id"] == "sim1" and params["preset"] == "quick"
    assert params["flag"] == "OK", params["reason"]
    assert list(params["parameters"]) == list(NAMES)
    assert params["posterior"] == "laplace" and params["optimiser"]["success"]
    for name in LENS_PARAMETERS:
        p, e = params["parameters"][name], params["errors"][name]
        assert e["statistical"] == pytest.approx((p["p84"] - p["p16"]) / 2)
        assert e["total"] == pytest.approx(np.hypot(e["statistical"], e["systematic"]))
        assert 0 < e["statistical"] < 0.2, name
    assert set(params["reduced_chi2"]) == {"g", "r", "i", "joint"}
    assert 0.5 < params["reduced_chi2"]["joint"] < 2.0
    preset = PRESETS["quick"]
    assert params["likelihood_evaluations"] == preset.pso_particles * (preset.pso_iterations + 1)
    assert params["gradient_evaluations"] > 2 * len(NAMES) and params["cpu_seconds"] > 0
    assert params["versions"]["lenstronomy"].startswith("1.14")
    text = (out / "sim1.txt").read_text()
    assert "theta_E_lens0:" in text and "reduced chi^2:" in text
    pngs = ("model", "corner", "trace", "overview", "physical")
    for png in (f"sim1_{name}.png" for name in pngs):
        assert matplotlib.image.imread(out / png).ndim == 3
    with np.load(out / "posterior.npz") as posterior:
        assert posterior["samples"].shape == (preset.posterior_draws, len(NAMES))
        assert posterior["covariance"].shape == (len(NAMES), len(NAMES))
        # The draws are the reported posterior: their spread is the reported error.
        k = NAMES.index("theta_E_lens0")
        sigma = params["errors"]["theta_E_lens0"]["statistical"]
        assert np.std(posterior["samples"][:, k]) == pytest.approx(sigma, rel=0.1)
    with tarfile.open(out / "sim1.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert names == {
        "params.json",
        "sim1.txt",
        "sim1_model.png",
        "sim1_corner.png",
        "sim1_trace.png",
        "sim1_overview.png",
        "sim1_physical.png",
        "posterior.npz",
        "MANIFEST",
    }
    assert not list(out.glob(".*tmp*")) and not (out / "checkpoint.npz").exists()


def test_quick_preset_recovers_theta_e(quick_fit: tuple[Path, dict], tmp_path: Path) -> None:
    fits = [quick_fit]
    for seed in (2, 3):
        path, truth = simulated_input(tmp_path, seed, LENSES)
        assert run_fit(path, tmp_path / f"out{seed}", "quick") == EXIT_DONE
        fits.append((tmp_path / f"out{seed}", truth))
    for out, truth in fits:
        params = json.loads((out / "params.json").read_text())
        theta = params["parameters"]["theta_E_lens0"]["median"]
        assert abs(theta - truth["THETA_E"]) / truth["THETA_E"] < 0.10, (theta, truth["THETA_E"])


def test_off_centre_lens_is_fitted_at_its_x_and_y(tmp_path: Path) -> None:
    """Frame: the data sit where lenstronomy models them; a swapped or mirrored frame would
    put the likelihood's peak elsewhere."""
    off = LENSES.model_copy(update={"centre_max": 1.0})
    seed = next(
        s
        for s in range(20, 60)
        if abs(np.subtract(*_centre(s, off))) > 0.6 and min(np.abs(_centre(s, off))) > 0.2
    )
    cx, cy = _centre(seed, off)
    path, _ = simulated_input(
        tmp_path, seed, off, prior_centre=(cx + 0.1, cy - 0.1), centre_sigma=0.1
    )
    assert run_fit(path, tmp_path / "out", "quick") == EXIT_DONE
    fitted = json.loads((tmp_path / "out" / "params.json").read_text())["parameters"]
    # The quick preset is rough; a swapped (> 0.6") or mirrored (> 0.4") frame is far worse.
    assert fitted["center_x_lens_light0"]["median"] == pytest.approx(cx, abs=0.15)
    assert fitted["center_y_lens_light0"]["median"] == pytest.approx(cy, abs=0.15)

    problem = Problem(read_candidate(path), PRESETS["quick"])
    best = np.array([fitted[n]["best"] for n in problem.names])
    ix, iy = (
        problem.names.index("center_x_lens_light0"),
        problem.names.index("center_y_lens_light0"),
    )
    for x, y in ((cy, cx), (-cx, cy), (cx, -cy)):
        moved = best.copy()
        moved[[ix, iy]] = x, y
        assert problem.log_likelihood(moved) < problem.log_likelihood(best) - 100


def test_a_posterior_at_its_bound_is_flagged(tmp_path: Path) -> None:
    """A regressor far too low, and too sure: the Einstein radius cannot reach the truth,
    piles up at its bound, and the fit says so instead of reporting a tight error."""
    truth = simulate_system(np.random.SeedSequence(2), LENSES).truth
    path, _ = simulated_input(tmp_path, 2, LENSES, THETA_E=0.6 * truth["THETA_E"], THETA_E_ERR=0.01)
    assert run_fit(path, tmp_path / "out", "quick") == EXIT_DONE
    params = json.loads((tmp_path / "out" / "params.json").read_text())
    upper = problem_bounds(path)["theta_E_lens0"][1]
    assert upper < truth["THETA_E"]
    assert params["flag"] == "AT_BOUND"
    assert "theta_E_lens0" in params["reason"]
    assert params["parameters"]["theta_E_lens0"]["p84"] >= 0.98 * upper


def problem_bounds(path: Path) -> dict[str, tuple[float, float]]:
    start = Problem(read_candidate(path), PRESETS["quick"]).start
    return {n: (lo, hi) for n, lo, hi in zip(NAMES, start.lower, start.upper, strict=True)}


def _centre(seed: int, settings: SimulationSettings) -> tuple[float, float]:
    t = simulate_system(np.random.SeedSequence(seed), settings).truth
    return t["CENTER_X"], t["CENTER_Y"]


def test_checkpoint_and_resume_match_an_uninterrupted_fit(
    quick_fit: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = simulated_input(tmp_path, 1, LENSES)
    out = tmp_path / "resumed"
    codes = []
    while not codes or codes[-1] == EXIT_CHECKPOINT:
        codes.append(run_fit(path, out, "quick", checkpoint_every=0.1))
        assert len(codes) < 200
    assert codes[-1] == EXIT_DONE and codes.count(EXIT_CHECKPOINT) >= 2
    resumed = json.loads((out / "params.json").read_text())
    whole = json.loads((quick_fit[0] / "params.json").read_text())
    assert resumed["restarts"] == codes.count(EXIT_CHECKPOINT)
    assert resumed["parameters"] == whole["parameters"]
    with np.load(out / "posterior.npz") as a, np.load(quick_fit[0] / "posterior.npz") as b:
        np.testing.assert_array_equal(a["samples"], b["samples"])


def test_a_checkpoint_cut_short_is_discarded_and_the_fit_starts_over(
    quick_fit: tuple[Path, dict], tmp_path: Path
) -> None:
    """A crash while the checkpoint was written leaves it truncated: the fit starts over
    (CPU lost, nothing else) and ends as an uninterrupted fit does."""
    path, _ = simulated_input(tmp_path, 1, LENSES)
    out = tmp_path / "out"
    assert run_fit(path, out, "quick", checkpoint_every=0.1) == EXIT_CHECKPOINT
    checkpoint = out / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert run_fit(path, out, "quick") == EXIT_DONE
    resumed = json.loads((out / "params.json").read_text())
    assert resumed["restarts"] == 0
    whole = json.loads((quick_fit[0] / "params.json").read_text())
    assert resumed["parameters"] == whole["parameters"]
    assert not checkpoint.exists()


def test_a_batch_checkpoints_inside_and_between_fits_and_never_refits(
    quick_fit: tuple[Path, dict], tmp_path: Path
) -> None:
    """A batch stopped every 0.1 s (exit 85) and started again until done, as HTCondor
    restarts a self-checkpointing job: every candidate is fitted exactly once, the fit
    interrupted inside matches an uninterrupted one, and inputs that cannot be fitted are
    recorded while the batch goes on."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    sources = {
        "sim1": simulated_input(tmp_path, 1, LENSES)[0],
        "sim2": simulated_input(tmp_path, 2, LENSES, BKG_RMS_R=0.0)[0],
        "sim3": simulated_input(tmp_path, 3, LENSES, NO_ARCS=True)[0],
        "sim4": simulated_input(tmp_path, 4, LENSES)[0],  # filed under another ID below
    }
    for cid, source in sources.items():
        (inputs / f"{cid}.fits").write_bytes(source.read_bytes())
    (inputs / "sim4.fits").rename(inputs / "other.fits")
    out = tmp_path / "out"
    said: list[tuple[str, int]] = []
    codes = []
    while not codes or codes[-1] == EXIT_CHECKPOINT:
        codes.append(run_batch(inputs, out, "quick", 0.1, lambda c, k: said.append((c, k))))
        assert len(codes) < 200
    assert codes[-1] == EXIT_DONE and codes.count(EXIT_CHECKPOINT) >= 3
    assert sorted(said) == [
        ("other", EXIT_BAD_INPUT),
        ("sim1", EXIT_DONE),
        ("sim2", EXIT_BAD_INPUT),
        ("sim3", EXIT_DONE),
    ]  # each exactly once, across every restart
    flags = {c: json.loads((out / c / "params.json").read_text()) for c, _ in said}
    assert flags["sim1"]["restarts"] >= 1  # stopped inside its fit, resumed from its state
    assert (
        flags["sim1"]["parameters"]
        == json.loads((quick_fit[0] / "params.json").read_text())["parameters"]
    )
    assert flags["sim2"]["reason"].startswith("unusable prior: BKG_RMS_R = 0.0")
    assert flags["sim3"]["flag"] == "NO_ARCS"
    assert flags["other"]["flag"] == "FAILED"
    assert "holds candidate 'sim4', not 'other'" in flags["other"]["reason"]
    for cid, _ in said:
        assert (out / cid / f"{cid}.tar.gz").exists()
        assert not (out / cid / "checkpoint.npz").exists()


def test_cli_checkpoint_exit_code(tmp_path: Path) -> None:
    path, _ = simulated_input(tmp_path, 1, LENSES)
    result = run_cli(
        "node",
        "fit",
        path,
        "--out",
        tmp_path / "out",
        "--preset",
        "quick",
        "--checkpoint-every",
        "1",
    )
    assert result.returncode == EXIT_CHECKPOINT, result.stderr
    assert (tmp_path / "out" / "checkpoint.npz").exists()
    assert not (tmp_path / "out" / "params.json").exists()


def test_no_arcs_is_an_answer_with_exit_0_and_says_why(tmp_path: Path) -> None:
    path, _ = simulated_input(tmp_path, 4, LENSES, NO_ARCS=True)
    result = run_cli("node", "fit", path, "--out", tmp_path / "out", "--preset", "quick")
    assert result.returncode == 0  # an answer, not a failure: the DAG node is done
    assert result.stdout.strip() == "sim4: NO_ARCS (the segmenter found no arc pixels)"
    params = json.loads((tmp_path / "out" / "params.json").read_text())
    assert params["flag"] == "NO_ARCS"


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"USABLE": False, "PROBLEM": "3 NaN/Inf pixels"}, "unusable pixels: 3 NaN/Inf pixels"),
        ({"BKG_RMS_R": 0.0}, "unusable prior: BKG_RMS_R = 0.0 (needs a positive number)"),
        ({"THETA_E": float("nan")}, "unusable prior: THETA_E = nan (needs a positive number)"),
    ],
)
def test_unusable_inputs_fail_with_exit_2(tmp_path: Path, update: dict, reason: str) -> None:
    path, _ = simulated_input(tmp_path, 5, LENSES, **update)
    assert run_fit(path, tmp_path / "out", "quick") == EXIT_BAD_INPUT
    params = json.loads((tmp_path / "out" / "params.json").read_text())
    assert (params["flag"], params["reason"]) == ("FAILED", reason)


def test_a_constant_band_is_refused_before_fitting(tmp_path: Path) -> None:
    """A band with no structure (a sky level only) cannot be fitted: the fit says so at
    once instead of failing after its PSO and optimiser."""
    path, _ = simulated_input(tmp_path, 7, LENSES)
    candidate = read_candidate(path)
    candidate.cutout[1] = 5.0
    write_candidate(path, candidate)
    assert run_fit(path, tmp_path / "out", "quick") == EXIT_BAD_INPUT
    params = json.loads((tmp_path / "out" / "params.json").read_text())
    assert (params["flag"], params["reason"]) == ("FAILED", "unusable pixels: band r constant (5)")
    assert "parameters" not in params


def test_a_fit_input_whose_id_is_not_an_id_is_refused(tmp_path: Path) -> None:
    """The ID becomes file names: one that could leave the output folder is refused."""
    path, _ = simulated_input(tmp_path, 8, LENSES)
    candidate = read_candidate(path)
    candidate.id = "../../evil"
    write_candidate(path, candidate)
    result = run_cli("node", "fit", path, "--out", tmp_path / "out", "--preset", "quick")
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip() == (
        f"error: {path}: its CANDID '../../evil' is not a candidate ID (letters, digits, _ and - "
        "only); write it with 'lensjobs node split'"
    )
    assert not list(tmp_path.rglob("evil*"))


def test_an_inconsistent_input_is_refused_in_one_line_before_fitting(tmp_path: Path) -> None:
    """A segmentation map that does not match the cutout: refused before any CPU is spent."""
    path, _ = simulated_input(tmp_path, 6, LENSES)
    candidate = read_candidate(path)
    candidate.classes = candidate.classes[:-2, :-2]
    write_candidate(path, candidate)
    result = run_cli("node", "fit", path, "--out", tmp_path / "out", "--preset", "quick")
    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {path}: SEGMAP is (43, 43) but CUTOUT is (45, 45); write it with "
        "'lensjobs node split'"
    )
    assert not (tmp_path / "out" / "params.json").exists()


# The fit image holds no torch (nor the schedd's bindings): `lensjobs node fit` must not
# import them, anywhere along its path.
_BLOCK_EXTRAS = """
import sys
EXTRAS = {"torch", "torchvision", "timm", "segmentation_models_pytorch", "safetensors",
          "htcondor", "htcondor2", "classad2"}
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ImportError(f"{name} is not installed in the fit image")
sys.meta_path.insert(0, Blocked())
from lensjobs.cli import main
sys.argv = ["lensjobs", *sys.argv[1:]]
main()
"""


def test_node_fit_runs_without_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    path, _ = simulated_input(tmp_path, 1, LENSES)
    out = tmp_path / "out"
    args = ["node", "fit", str(path), "--out", str(out), "--preset", "quick"]
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_EXTRAS, *args], capture_output=True, text=True
    )
    assert done.returncode == EXIT_DONE, done.stderr
    assert json.loads((out / "params.json").read_text())["flag"] != "FAILED"
    blocked = subprocess.run(
        [sys.executable, "-c", _BLOCK_EXTRAS, "node", "infer", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert "torch is not installed in the fit image" in blocked.stderr  # the blocker works
