"""The aggregate node on a real run directory: a simulated catalogue, the released networks
(`node infer`, `node split`), three quick fits, and the ways candidates end otherwise: a
FAILED fit, NO_ARCS, a node that died (with and without fit.err) and an unusable cutout."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import run_cli
from PIL import Image

from lensjobs import __version__
from lensjobs.aggregate import aggregate_run
from lensjobs.aggregate.collect import FITTED, NO_INFERENCE, NO_OUTPUT
from lensjobs.catalog import CatalogError, write_catalog
from lensjobs.fit.inputs import read_candidate, write_candidate
from lensjobs.simulate import SimulationSettings, simulate_catalog

BAD_PRIOR_REASON = "BKG_RMS_R = 0.0 (needs a positive number)"
CREATED = "2026-11-24T06:00:00+00:00"
# Row -> what becomes of the candidate.
FITS = (0, 1, 2)
BAD_PRIOR, NO_ARCS, DIED, NEVER_RAN, NAN_CUTOUT = 3, 4, 5, 6, 7
# A node that died: its last words in colour, then what jobs/fit.sh adds, then blank lines.
ERR_LINES = (
    "Traceback (most recent call last):\n  ...\nMemoryError: \x1b[31mout of memory\x1b[0m\n"
    "lensjobs node fit ended with exit code 137 (a fault, not bad input)\nfits_1 exit 1\n\n"
)
DIED_REASON = "MemoryError: out of memory (exit 1)"


def _fit(run: Path, cid: str) -> int:
    node = run / "nodes" / cid
    result = run_cli("node", "fit", node / "input.fits", "--out", node, "--preset", "quick")
    (node / "fit.out").write_text(result.stdout)
    (node / "fit.err").write_text(result.stderr)
    if (node / f"{cid}.tar.gz").exists():  # the job wrapper brings it back to results/
        shutil.copy(node / f"{cid}.tar.gz", run / "results" / f"{cid}.tar.gz")
    return result.returncode


def _update_prior(run: Path, cid: str, **updates: object) -> None:
    path = run / "nodes" / cid / "input.fits"
    candidate = read_candidate(path)
    candidate.prior.update(updates)
    write_candidate(path, candidate)


def make_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory, made once per session (the gallery tests use it too)."""
    run = tmp_path_factory.getbasetemp() / "aggregate_run"
    if (run / "run.json").exists():
        return run
    work = tmp_path_factory.mktemp("aggregate_build")
    sim = simulate_catalog(
        work / "sim.fits", 8, seed=11, settings=SimulationSettings(nonlens_frac=0.0), workers=1
    )
    with fits.open(sim) as hdul:
        images = np.array(hdul["IMAGES"].data)
        table = Table.read(hdul["CATALOG"])
    images[NAN_CUTOUT, 1, 10:12, 10:12] = np.nan
    table["FLAG"] = np.arange(len(table))  # clashes with a results column: carried as IN_FLAG
    run.mkdir()
    write_catalog(run / "candidates.fits", images, table)
    result = run_cli("node", "infer", run / "candidates.fits", "--out", run / "infer")
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "node",
        "split",
        run / "candidates.fits",
        run / "infer" / "priors.fits",
        "--out",
        run / "nodes",
    )
    assert result.returncode == 0, result.stderr
    (run / "results").mkdir()
    ids = [str(i) for i in table["COADD_OBJECT_ID"]]
    for row in FITS:
        assert _fit(run, ids[row]) == 0
    _update_prior(run, ids[BAD_PRIOR], BKG_RMS_R=0.0)
    assert _fit(run, ids[BAD_PRIOR]) == 2
    _update_prior(run, ids[NO_ARCS], NO_ARCS=True)
    assert _fit(run, ids[NO_ARCS]) == 0  # NO_ARCS is an answer, not bad input
    (run / "nodes" / ids[DIED] / "fit.err").write_text(ERR_LINES)
    assert not (run / "nodes" / ids[NAN_CUTOUT]).exists()  # the split makes no input for it
    info = {
        "name": "agg-test",
        "created": CREATED,
        "input": {"path": str(sim), "sha256": "0" * 64},
        "settings": {"preset": "quick"},
        "versions": {"lensjobs": __version__},
    }
    (run / "run.json").write_text(json.dumps(info))
    aggregate_run(run, workers=2)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory)


@pytest.fixture(scope="module")
def ids(run: Path) -> list[str]:
    return [str(i) for i in Table.read(run / "candidates.fits", hdu="CATALOG")["COADD_OBJECT_ID"]]


def _params(run: Path, cid: str) -> dict:
    return json.loads((run / "nodes" / cid / "params.json").read_text())


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_catalogue_has_one_row_per_candidate_with_status_flag_reason(
    run: Path, ids: list[str]
) -> None:
    with fits.open(run / "summary" / "catalog.fits") as hdul:
        header = hdul["RESULTS"].header
        assert (header["RUNNAME"], header["PRESET"]) == ("agg-test", "quick")
        assert header["LENSJOBS"] == __version__ and header["CREATED"] == CREATED
    table = Table.read(run / "summary" / "catalog.fits", hdu="RESULTS", mask_invalid=False)
    inputs = Table.read(run / "candidates.fits", hdu="CATALOG")
    assert list(table["COADD_OBJECT_ID"]) == ids
    np.testing.assert_array_equal(table["RA"], inputs["RA"])
    np.testing.assert_array_equal(table["IN_FLAG"], inputs["FLAG"])
    estimates = ["THETA_E", "CENTER_X", "CENTER_Y", "E1", "E2", "GAMMA1", "GAMMA2"]
    assert table.colnames[: 6 + 4 * len(estimates) + 2] == [
        "COADD_OBJECT_ID", "RA", "DEC", "STATUS", "FLAG", "REASON",
        *(f"{e}{s}" for e in estimates for s in ("", "_ERR", "_ERR_STAT", "_ERR_SYS")),
        "REDUCED_CHI2", "CPU_SECONDS",
    ]  # fmt: skip
    assert {"TILENAME", "FWHM_WMEAN_G"} <= set(table.colnames)

    for row in FITS:
        params = _params(run, ids[row])
        theta = params["parameters"]["theta_E_lens0"]
        assert table["STATUS"][row] == "DONE" and table["FLAG"][row] in FITTED
        assert table["THETA_E"][row] == theta["median"]
        error = params["errors"]["theta_E_lens0"]
        assert table["THETA_E_ERR_STAT"][row] == pytest.approx((theta["p84"] - theta["p16"]) / 2)
        assert table["THETA_E_ERR_SYS"][row] == error["systematic"]
        assert table["THETA_E_ERR"][row] == pytest.approx(
            np.hypot(error["statistical"], error["systematic"])
        )
        assert table["GAMMA1"][row] == params["parameters"]["gamma1_lens1"]["median"]
        centre = params["parameters"]["center_x_lens_light0"]["median"]
        assert table["CENTER_X"][row] == centre
        assert table["REDUCED_CHI2"][row] == params["reduced_chi2"]["joint"]
        assert table["CPU_SECONDS"][row] == params["cpu_seconds"]
    expected = {
        BAD_PRIOR: (
            "FAILED",
            "FAILED",
            "unusable prior: BKG_RMS_R = 0.0 (needs a positive number)",
        ),
        NO_ARCS: ("DONE", "NO_ARCS", "the segmenter found no arc pixels"),
        DIED: ("MISSING", "", DIED_REASON),
        NEVER_RAN: ("MISSING", "", NO_OUTPUT),
        NAN_CUTOUT: ("SKIPPED", "", "4 NaN/Inf pixels"),
    }
    for row, (status, flag, reason) in expected.items():
        assert (table["STATUS"][row], table["FLAG"][row], table["REASON"][row]) == (
            status,
            flag,
            reason,
        )
        assert np.isnan(table["THETA_E"][row]) and np.isnan(table["REDUCED_CHI2"][row])

    csv = Table.read(run / "summary" / "catalog.csv", format="ascii.csv")
    assert list(csv.colnames) == table.colnames
    assert [str(i) for i in csv["COADD_OBJECT_ID"]] == ids
    assert list(csv["STATUS"]) == list(table["STATUS"])
    np.testing.assert_allclose(csv["THETA_E"], table["THETA_E"], equal_nan=True)


def test_failed_txt_lists_every_candidate_not_done(run: Path, ids: list[str]) -> None:
    lines = (run / "summary" / "failed.txt").read_text().splitlines()
    assert lines == [
        "# ID\tstatus\treason",
        f"{ids[BAD_PRIOR]}\tFAILED\tunusable prior: {BAD_PRIOR_REASON}",
        f"{ids[DIED]}\tMISSING\t{DIED_REASON}",
        f"{ids[NEVER_RAN]}\tMISSING\t{NO_OUTPUT}",
        f"{ids[NAN_CUTOUT]}\tSKIPPED\t4 NaN/Inf pixels",
    ]


def test_every_candidate_has_a_picture(run: Path, ids: list[str]) -> None:
    """A summary per fit; for every other candidate a card (its colour cutout, segmentation
    and reason); a thumbnail for each, with the critical curve where there is a fit."""
    pngs = sorted(p.name for p in (run / "summary").glob("*.png"))
    assert pngs == sorted([f"{cid}.png" for cid in ids] + [f"{cid}_thumb.png" for cid in ids])
    for row, cid in enumerate(ids):
        with Image.open(run / "summary" / f"{cid}.png") as image:
            assert image.mode == "RGB"
            assert not image.info  # no software tag, no date: identical on every run
            if row in FITS:
                assert image.width == 1500 and image.height > 820
            else:  # a card: two 270 px panels side by side, the text below
                assert image.width == 2 * 45 * 6 + 30 and image.height > 270 + 2 * 26
                segmentation = image.crop((290, 10, 560, 280)).getcolors(10_000)
                # The networks saw every cutout but the NaN one: its map stays blank.
                assert (len(segmentation) == 1) == (row == NAN_CUTOUT), (row, segmentation)
        with Image.open(run / "summary" / f"{cid}_thumb.png") as thumb:
            assert thumb.size == (135, 135)
            curve = np.all(np.asarray(thumb) == (255, 210, 31), axis=-1).sum()
            assert (curve > 20) == (row in FITS), (row, curve)


def test_manifests_and_tarball(run: Path, ids: list[str]) -> None:
    lines = (run / "results" / "MANIFEST").read_text().splitlines()
    tarballs = sorted((run / "results").glob("*.tar.gz"))
    assert {ids[r] for r in FITS} <= {p.name.removesuffix(".tar.gz") for p in tarballs}
    assert lines == [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in tarballs]

    summary = run / "summary"
    with tarfile.open(summary / "lensjobs_agg-test_results.tar.gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        contents = {m.name: tar.extractfile(m).read() for m in members}
    top = "lensjobs_agg-test_results/"
    files = sorted(
        [f"{cid}.png" for cid in ids]
        + [f"{cid}_thumb.png" for cid in ids]
        + ["catalog.csv", "catalog.fits", "failed.txt", "index.html"]
    )
    assert names == [top + f for f in files] + [top + "MANIFEST"]
    for f in files:
        assert contents[top + f] == (summary / f).read_bytes()
    manifest = contents[top + "MANIFEST"].decode().splitlines()
    assert manifest == [f"{hashlib.sha256(contents[top + f]).hexdigest()}  {f}" for f in files]
    created = int(datetime.fromisoformat(CREATED).timestamp())
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(created, 0, 0, 0o644)}


def test_report_counts(run: Path, ids: list[str]) -> None:
    report = aggregate_run(run, workers=1)
    assert report.candidates == 8 and report.failed == 4
    assert report.by_status == {"DONE": 4, "FAILED": 1, "MISSING": 2, "SKIPPED": 1}
    assert sum(report.by_flag[f] for f in FITTED) == 3 and report.by_flag["NO_ARCS"] == 1
    assert report.by_flag["FAILED"] == 1
    assert report.pngs_built == 0  # all up to date
    cpu = sum(_params(run, ids[row])["cpu_seconds"] for row in FITS)
    assert report.cpu_hours == pytest.approx(cpu / 3600)
    assert {p.name for p in report.written} == {
        "catalog.fits",
        "catalog.csv",
        "failed.txt",
        "index.html",
        "MANIFEST",
        "lensjobs_agg-test_results.tar.gz",
    }


def test_running_again_gives_the_same_bytes(run: Path, ids: list[str]) -> None:
    before = {**_files(run / "summary"), "MANIFEST": (run / "results" / "MANIFEST").read_bytes()}
    progress: list[int] = []
    aggregate_run(run, workers=2, progress=progress.append)
    assert sum(progress) == 8
    # Rendered again, in this process rather than a worker: the same bytes.
    (run / "summary" / f"{ids[0]}.png").unlink()
    assert aggregate_run(run, workers=1).pngs_built == 1
    after = {**_files(run / "summary"), "MANIFEST": (run / "results" / "MANIFEST").read_bytes()}
    assert after == before
    assert not list((run / "summary").glob(".*tmp*"))


def test_partial_run_is_reported_not_a_crash(run: Path, ids: list[str], tmp_path: Path) -> None:
    """A corrupt params.json, a missing corner plot, no priors, nodes that never ran."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "summary")
    (copy / "nodes" / ids[1] / "params.json").write_text('{"id": "trunc')
    (copy / "nodes" / ids[0] / f"{ids[0]}_physical.png").unlink()
    (copy / "infer" / "priors.fits").unlink()
    (copy / "run.json").write_text("not json")
    report = aggregate_run(copy, workers=2)
    assert report.by_status == {"DONE": 3, "FAILED": 2, "MISSING": 2, "SKIPPED": 1}
    table = Table.read(copy / "summary" / "catalog.csv", format="ascii.csv")
    assert table["STATUS"][1] == "FAILED"
    assert table["REASON"][1] == f"nodes/{ids[1]}/params.json is unreadable (JSONDecodeError)"
    # Without priors the cutout scan still finds the unusable one.
    assert (table["STATUS"][NAN_CUTOUT], table["REASON"][NAN_CUTOUT]) == (
        "SKIPPED",
        "4 NaN/Inf pixels",
    )
    assert table["REASON"][NEVER_RAN] == NO_INFERENCE
    # The missing corner plot is drawn as a grey panel below the fit's overview.
    with Image.open(copy / "nodes" / ids[0] / f"{ids[0]}_overview.png") as overview:
        top = round(overview.height * 1500 / overview.width)
    with Image.open(copy / "summary" / f"{ids[0]}.png") as image:
        assert image.size == (1500, top + 820)
        assert image.getpixel((400, top + 600)) == (225, 225, 225)
        assert image.getpixel((400, top // 2)) != (225, 225, 225)
    # A damaged run.json: the run is named for its folder.
    assert (copy / "summary" / "lensjobs_run_results.tar.gz").exists()


def test_without_a_catalogue_it_says_so(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        aggregate_run(tmp_path)
