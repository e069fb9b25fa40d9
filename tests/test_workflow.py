"""The workflow on this machine: `submit --dry-run` writes a DAG HTCondor accepts the shape
of, `submit --local` runs it (real networks, real quick fits), and status, resubmit and
pull behave as on a pool. The pool itself is exercised in test_pool.py."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import run_cli

from lensjobs.fit.inputs import read_candidate, write_candidate
from lensjobs.simulate import simulate_catalog

BROKEN = 2  # row whose cutout gets NaNs: validated, skipped, reported


def with_broken_cutout(source: Path, target: Path, row: int = BROKEN) -> Path:
    with fits.open(source) as hdul:
        hdul["IMAGES"].data[row, 1, 10:20, 10:20] = np.nan
        hdul.writeto(target)
    return target


def catalogue_ids(path: Path) -> list[str]:
    with fits.open(path) as hdul:
        return [str(i) for i in hdul["CATALOG"].data["COADD_OBJECT_ID"]]


@pytest.fixture(scope="module")
def candidates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("workflow")
    clean = simulate_catalog(folder / "clean.fits", 5, seed=21, workers=2)
    return with_broken_cutout(clean, folder / "candidates.fits")


def submit_local(candidates: Path, runs: Path) -> Path:
    result = run_cli(
        "submit", candidates, "--runs-dir", runs, "--local", "-j", "2",
        "--preset", "quick", "--infer-gpus", "0", "--fits-per-job", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return runs / "candidates"


@pytest.fixture(scope="module")
def local_run(candidates: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run that the tests using it only read."""
    return submit_local(candidates, tmp_path_factory.mktemp("runs"))


def stand_in_image(path: Path, megabytes: float) -> Path:
    """A file named like an image, for dry runs (the real images run in test_pool.py)."""
    path.write_bytes(b"\0" * int(megabytes * 1_000_000))
    return path


def test_dry_run_writes_the_dag_and_submit_files(candidates: Path, tmp_path: Path) -> None:
    fit_image = stand_in_image(tmp_path / "fit-1.sif", 2.5)
    result = run_cli(
        "submit", candidates, "--runs-dir", tmp_path, "--dry-run", "--name", "dry",
        "--fit-memory", "2GB", "--max-running-fits", "7", "--fit-image", fit_image,
        "--fits-per-job", "3",
        "--infer-image", "docker://hub.example.org/lensjobs-infer:1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"fit image: {fit_image} (--fit-image)" in result.stdout
    run = tmp_path / "dry"
    ids = catalogue_ids(candidates)
    broken = ids[BROKEN]
    assert f"skipped {broken}: " in result.stdout
    assert "4 candidates to fit in 2 fit job(s) of up to 3" in result.stdout
    dag = (run / "lensjobs.dag").read_text()
    fit_nodes = re.findall(r"^JOB (fits_\S+) fit\.sub$", dag, re.MULTILINE)
    assert fit_nodes == ["fits_1", "fits_2"]
    batches = [(run / "batches" / str(k) / "ids.txt").read_text().split() for k in (1, 2)]
    assert batches == [[i for i in ids if i != broken][:3], [i for i in ids if i != broken][3:]]
    for k, node in enumerate(fit_nodes, 1):
        assert f'VARS {node} BATCH="{k}"' in dag
        assert f"SCRIPT PRE {node} jobs/stage.sh {sys.executable} {k}" in dag
        assert f"SCRIPT POST {node} jobs/collect.sh {sys.executable} {k} $RETURN" in dag
        assert f"PRE_SKIP {node} 3" in dag
        assert f"RETRY {node} 2 UNLESS-EXIT 2" in dag
        assert f"CATEGORY {node} fits" in dag
    assert "JOB infer infer.sub" in dag
    assert "SCRIPT POST infer jobs/split.sh" in dag
    assert "MAXJOBS fits 7" in dag
    assert "FINAL aggregate aggregate.sub" in dag
    assert "SCRIPT POST aggregate jobs/final.sh $RETURN $FAILED_COUNT" in dag
    assert "NODE_STATUS_FILE lensjobs.dag.status" in dag
    assert set(re.findall(r"^PARENT infer CHILD (.+)$", dag, re.MULTILINE)[0].split()) == set(
        fit_nodes
    )
    fit_sub = (run / "fit.sub").read_text()
    assert "{{" not in fit_sub
    assert re.search(r"^request_cpus\s+= 1$", fit_sub, re.MULTILINE)
    assert re.search(r"^request_memory\s+= 2048MB$", fit_sub, re.MULTILINE)
    assert re.search(r"^checkpoint_exit_code\s+= 85$", fit_sub, re.MULTILINE)
    assert re.search(r"^transfer_checkpoint_files\s+= out$", fit_sub, re.MULTILINE)
    assert re.search(r"^transfer_input_files\s+= in, out, ", fit_sub, re.MULTILINE)
    assert re.search(r"^arguments\s+= \$\(BATCH\) standard 900$", fit_sub, re.MULTILINE)
    assert re.search(rf"^container_image\s+= {fit_image}$", fit_sub, re.MULTILINE)
    # 100 MB, 8 MB per candidate of the batch and the image.
    assert re.search(r"^request_disk\s+= 127MB$", fit_sub, re.MULTILINE)
    assert re.search(r'^\+JobDurationCategory\s+= "Medium"$', fit_sub, re.MULTILINE)
    infer_sub = (run / "infer.sub").read_text()
    assert re.search(r"^request_gpus\s+= 1$", infer_sub, re.MULTILINE)
    assert "gpus_minimum" not in infer_sub  # asked for only when given
    assert "ProjectName" not in infer_sub
    assert re.search(
        r"^container_image\s+= docker://hub.example.org/lensjobs-infer:1$", infer_sub, re.M
    )
    # Jobs see nothing of this machine: no path into its Python or venv.
    for sub in (fit_sub, infer_sub):
        assert sys.prefix not in sub and sys.base_prefix not in sub
        assert "LENSJOBS_PYTHON" not in sub
    info = json.loads((run / "run.json").read_text())
    assert info["images"]["fit"]["sha256"] == hashlib.sha256(fit_image.read_bytes()).hexdigest()
    assert info["images"]["infer"]["sha256"] is None  # not a local file
    assert info["settings"]["fit_memory"] == 2048
    assert info["settings"]["fits_per_job"] == 3
    assert info["input"]["fits"] == len(ids) - 1
    assert info["skipped"][broken] == "100 NaN/Inf pixels"
    assert info["submissions"] == []
    status = run_cli("status", run, "--watch")  # returns: a dry run never starts
    assert status.returncode == 0
    assert "DAG not submitted" in status.stdout
    assert "candidates: 0/4 finished; 4 waiting; 1 skipped (bad cutouts)" in status.stdout


def test_fits_per_job_defaults_to_45_minutes_of_the_presets_fits(
    candidates: Path, tmp_path: Path
) -> None:
    for preset, per_job in (("standard", 193), ("quick", 386)):
        result = run_cli(
            "submit", candidates, "--runs-dir", tmp_path, "--dry-run", "--shared-fs",
            "--name", preset, "--preset", preset,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        info = json.loads((tmp_path / preset / "run.json").read_text())
        assert info["settings"]["fits_per_job"] == per_job
    hidden = run_cli(
        "submit", candidates, "--runs-dir", tmp_path, "--dry-run", "--preset", "trivial"
    )
    assert hidden.returncode == 2
    assert "choose one of standard, mcmc, seed, quick" in hidden.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fit-memory", "lots"], "error: --fit-memory 'lots': 'lots' is not a size; write it"),
        (["--preset", "fast"], "error: --preset 'fast': unknown; choose one of"),
        (["--name", "../x"], "error: --name '../x': use 1-64 letters, digits, '_' or '-'"),
        (["--infer-gpus", "3"], "error: --infer-gpus 3: "),
        (["--project", "a b"], "error: --project 'a b': use 1-64 letters, digits, '_', '.' or '-'"),
        (["--osdf-dir", "http://x/y"], "error: --osdf-dir 'http://x/y': not an OSDF directory"),
        (["--fit-image", "none.sif"], "error: --fit-image 'none.sif' (--fit-image): no such file"),
        (
            ["--infer-gpus", "0", "--infer-gpu-memory", "8GB"],
            "error: --infer-gpu-memory: asks about a GPU; it needs --infer-gpus 1",
        ),
    ],
)
def test_bad_settings_write_nothing(
    candidates: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("submit", candidates, "--runs-dir", tmp_path / "runs", "--dry-run", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.fixture
def no_default_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither variables, a config file nor built images name an image."""
    monkeypatch.setenv("LENSJOBS_IMAGE_DIR", str(tmp_path / "no-images"))
    monkeypatch.setenv("LENSJOBS_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.delenv("LENSJOBS_FIT_IMAGE", raising=False)
    monkeypatch.delenv("LENSJOBS_INFER_IMAGE", raising=False)


def test_without_an_image_submit_refuses_and_writes_nothing(
    candidates: Path, tmp_path: Path, no_default_images: None
) -> None:
    result = run_cli("submit", candidates, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: no fit image: build the images with 'make images' in the lensjobs checkout, "
        "or name one with --fit-image or $LENSJOBS_FIT_IMAGE"
    )
    assert "--shared-fs runs jobs with this Python" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    shared = run_cli(
        "submit", candidates, "--runs-dir", tmp_path / "runs", "--dry-run", "--shared-fs"
    )
    assert shared.returncode == 0, shared.stderr
    fit_sub = (tmp_path / "runs" / "candidates" / "fit.sub").read_text()
    assert f'environment               = "LENSJOBS_PYTHON={sys.executable}"' in fit_sub
    assert "container_image" not in fit_sub


def test_images_come_from_the_environment_or_the_config_file(
    candidates: Path, tmp_path: Path, no_default_images: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    infer = "osdf:///ospool/ap40/data/astro/lensjobs-infer-0.1.0-1.sif"
    config = tmp_path / "config.toml"
    config.write_text(f'infer_image = "{infer}"\nproject = "Astro_Lenses"\n')
    monkeypatch.setenv("LENSJOBS_CONFIG", str(config))
    monkeypatch.setenv("LENSJOBS_FIT_IMAGE", "docker://example.org/lensjobs-fit:0.1.0")
    result = run_cli("submit", candidates, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "fit image: docker://example.org/lensjobs-fit:0.1.0 ($LENSJOBS_FIT_IMAGE)" in (
        result.stdout
    )
    assert f"infer image: {infer} ({config})" in result.stdout
    run = tmp_path / "runs" / "candidates"
    for sub in ("fit.sub", "infer.sub"):
        assert '+ProjectName              = "Astro_Lenses"' in (run / sub).read_text()
    config.write_text("fit_imag = 'x.sif'\n")
    typo = run_cli("submit", candidates, "--runs-dir", tmp_path / "runs2", "--dry-run")
    assert typo.returncode == 2
    assert f"error: {config}: unknown key 'fit_imag'; the keys are fit_image" in typo.stderr


def test_osdf_dry_run_names_every_input_by_url(candidates: Path, tmp_path: Path) -> None:
    osdf = "osdf:///ospool/ap40/data/astro/lensjobs"
    fit = stand_in_image(tmp_path / "lensjobs-fit-0.1.0-aaaa.sif", 0.1)
    infer = stand_in_image(tmp_path / "lensjobs-infer-0.1.0-bbbb.sif", 3.2)
    args = [
        "submit", candidates, "--runs-dir", tmp_path / "runs", "--name", "ospool",
        "--osdf-dir", osdf + "/", "--fit-image", fit, "--infer-image", infer,
        "--infer-gpu-memory", "10GB", "--infer-gpu-capability", "8.0", "--project", "UW_Astro",
    ]  # fmt: skip
    # Not on an OSPool access point: /ospool/... is not here, so a real submission refuses.
    refused = run_cli(*args)
    assert refused.returncode == 2
    assert "/ospool/ap40/data/astro/lensjobs is not visible here" in refused.stderr
    assert not (tmp_path / "runs").exists()

    result = run_cli(*args, "--dry-run")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "ospool"
    info = json.loads((run / "run.json").read_text())
    catalogue = f"lensjobs-ospool-{info['input']['sha256'][:12]}.fits"
    assert info["input"]["osdf"] == f"{osdf}/{catalogue}"
    fit_sub, infer_sub = (run / "fit.sub").read_text(), (run / "infer.sub").read_text()
    assert f"container_image           = {osdf}/{fit.name}" in fit_sub
    assert f"container_image           = {osdf}/{infer.name}" in infer_sub
    assert f"transfer_input_files      = {osdf}/{catalogue}, {run}/jobs/common.sh" in infer_sub
    assert f"arguments                 = {catalogue}" in infer_sub
    assert "gpus_minimum_memory       = 10240" in infer_sub
    assert "gpus_minimum_capability   = 8\n" in infer_sub
    assert "request_disk              = 1004MB" in infer_sub  # 1000 + the 3.2 MB image
    # What to put on OSDF, file by file.
    assert f"  {run / 'candidates.fits'} -> {osdf}/{catalogue}" in result.stdout
    assert f"  {fit} -> {osdf}/{fit.name}" in result.stdout
    assert f"  {infer} -> {osdf}/{infer.name}" in result.stdout


def test_bad_catalogue_writes_no_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a FITS file at all")
    result = run_cli("submit", bad, "--runs-dir", tmp_path / "runs", "--dry-run", "--shared-fs")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert not (tmp_path / "runs" / "bad").exists()
    assert not list((tmp_path / "runs").glob(".*")) if (tmp_path / "runs").exists() else True


def test_an_existing_run_is_never_overwritten(local_run: Path, candidates: Path) -> None:
    before = (local_run / "run.json").read_text()
    result = run_cli(
        "submit", candidates, "--runs-dir", local_run.parent, "--dry-run", "--shared-fs"
    )
    assert result.returncode == 2
    assert "already exists; choose another --name, or use 'lensjobs resubmit" in result.stderr
    assert (local_run / "run.json").read_text() == before


def test_local_run_completes_and_reports(local_run: Path, candidates: Path) -> None:
    ids = catalogue_ids(candidates)
    fitted = [i for i in ids if i != ids[BROKEN]]
    flags = []
    for cid in fitted:
        params = json.loads((local_run / "nodes" / cid / "params.json").read_text())
        assert params["id"] == cid
        flags.append(params["flag"])
        assert (local_run / "results" / f"{cid}.tar.gz").exists()
    assert not (local_run / "nodes" / ids[BROKEN] / "params.json").exists()
    assert not list(local_run.glob("lensjobs.dag.rescue*"))
    outcomes = [
        line.split("\t")[:2]
        for k in (1, 2)
        for line in (local_run / "batches" / str(k) / "outcomes.tsv").read_text().splitlines()
    ]
    assert outcomes == [[cid, flag] for cid, flag in zip(fitted, flags, strict=True)]
    status = run_cli("status", local_run)
    assert status.returncode == 0
    assert "candidates: DAG succeeded; nodes: 4 done" in status.stdout  # infer, 2 fits, final
    assert run_cli("status", local_run, "--watch").stdout == status.stdout  # ended: no wait
    counts = ", ".join(f"{flags.count(f)} {f}" for f in sorted(set(flags)))
    assert f"candidates: {len(fitted)}/{len(fitted)} finished ({counts}); 1 skipped" in (
        status.stdout
    )
    failed = (local_run / "summary" / "failed.txt").read_text()
    assert ids[BROKEN] in failed


def test_pull_verifies_and_extracts(local_run: Path, tmp_path: Path) -> None:
    result = run_cli("pull", local_run, "--to", tmp_path / "got")
    assert result.returncode == 0, result.stderr
    tarballs = sorted(p.name for p in (local_run / "results").glob("*.tar.gz"))
    assert f"extracted {len(tarballs)} fit result(s)" in result.stdout
    for name in tarballs:
        cid = name.removesuffix(".tar.gz")
        assert (tmp_path / "got" / "nodes" / cid / "params.json").exists()
        assert (tmp_path / "got" / "results" / name).read_bytes() == (
            local_run / "results" / name
        ).read_bytes()
    gallery = tmp_path / "got" / "lensjobs_candidates_results"
    assert (gallery / "index.html").exists()
    assert (gallery / "lensjobs_candidates_results.tar.gz").exists()  # linked from it
    skipped = catalogue_ids(local_run / "candidates.fits")[BROKEN]
    assert f"\nskipped {skipped}: 100 NaN/Inf pixels\n" in result.stdout  # not "failed"
    assert "[" not in result.stdout  # no raw markup


def test_pull_refuses_a_damaged_tarball(local_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(local_run, copy)
    victim = sorted((copy / "results").glob("*.tar.gz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    result = run_cli("pull", copy, "--to", tmp_path / "got")
    assert result.returncode == 1
    assert f"not trusted {victim.name}: its sha256 differs from the manifest" in result.stderr
    assert not (tmp_path / "got" / "nodes" / victim.name.removesuffix(".tar.gz")).exists()


def test_unusable_candidate_is_recorded_and_resubmit_nodes_refits_only_it(
    candidates: Path, tmp_path: Path
) -> None:
    """A candidate whose input cannot be used ends FAILED with its reason, and its batch
    goes on (the node succeeds); `resubmit --nodes ID` fits just that candidate again, not
    the other one of its batch nor anything else. (A run of its own: it changes it.)"""
    local_run = submit_local(candidates, tmp_path)
    victim = next(  # a lens: a non-lens ends as NO_ARCS before its priors are checked
        cid
        for cid in catalogue_ids(candidates)
        if (local_run / "nodes" / cid / "params.json").exists()
        and json.loads((local_run / "nodes" / cid / "params.json").read_text())["flag"] != "NO_ARCS"
    )
    node_input = local_run / "nodes" / victim / "input.fits"
    good = read_candidate(node_input)
    bad = read_candidate(node_input)
    bad.prior["BKG_RMS_R"] = 0.0
    write_candidate(node_input, bad)
    others = {
        p.parent.name: p.stat().st_mtime_ns
        for p in (local_run / "nodes").glob("*/params.json")
        if p.parent.name != victim
    }

    forced = run_cli("resubmit", local_run, "--nodes", victim)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "1 candidate(s) to fit again, in 1 fit job(s)" in forced.stdout
    assert "DAG succeeded" in forced.stdout  # a candidate's bad input is not a node's fault
    batch = next(
        k for k in (1, 2) if victim in (local_run / "batches" / str(k) / "ids.txt").read_text()
    )
    reason = "unusable prior: BKG_RMS_R = 0.0 (needs a positive number)"
    assert f"FAILED {victim} (fits_{batch}): {reason}" in forced.stdout
    assert len(list(local_run.glob("lensjobs.dag.rescue*"))) == 1  # --nodes' own
    failed = (local_run / "summary" / "failed.txt").read_text()
    assert f"{victim}\tFAILED\t{reason}" in failed
    assert json.loads((local_run / "nodes" / victim / "params.json").read_text())["flag"] == (
        "FAILED"
    )

    write_candidate(node_input, good)
    fixed = run_cli("resubmit", local_run, "--nodes", victim, "--fit-memory", "1536MB")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "request_memory            = 1536MB" in (local_run / "fit.sub").read_text()
    assert json.loads((local_run / "run.json").read_text())["settings"]["fit_memory"] == 1536
    assert "DAG succeeded" in fixed.stdout
    assert json.loads((local_run / "nodes" / victim / "params.json").read_text())["flag"] != (
        "FAILED"
    )
    after = {
        p.parent.name: p.stat().st_mtime_ns
        for p in (local_run / "nodes").glob("*/params.json")
        if p.parent.name != victim
    }
    assert after == others  # nothing that finished ran again, its batch-mate included
    assert victim not in (local_run / "summary" / "failed.txt").read_text()
    outcomes = (local_run / "batches" / str(batch) / "outcomes.tsv").read_text()
    assert outcomes.count(f"{victim}\t") == 1  # forgotten, then recorded anew

    again = run_cli("resubmit", local_run)
    assert again.returncode == 2
    assert "nothing to resubmit" in again.stderr
    unknown = run_cli("resubmit", local_run, "--nodes", "no_such_id")
    assert unknown.returncode == 2
    assert "--nodes 'no_such_id': not a fitted candidate of" in unknown.stderr


def assert_not_opened(path: Path, tmp_path: Path, message: str) -> None:
    """status, resubmit and pull each refuse ``path`` with exactly ``message``, exit 2."""
    for command in ("status", "resubmit", "pull"):
        args = ("--to", tmp_path / "got") if command == "pull" else ()
        result = run_cli(command, path, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip() == f"error: {message}"


@pytest.mark.parametrize("name", ["../../etc", "a b", 7, None])
def test_a_run_whose_recorded_name_is_unsafe_is_refused(tmp_path: Path, name: object) -> None:
    """run.json's name becomes file and batch names: checked wherever it is read."""
    (tmp_path / "run.json").write_text(json.dumps({"name": name, "submissions": []}))
    assert_not_opened(
        tmp_path,
        tmp_path,
        f"{tmp_path / 'run.json'}: 'name' must be 1-64 letters, digits, '_' or '-' (found "
        f"{str(name)!r}); restore run.json as lensjobs submit wrote it",
    )


def test_a_path_that_is_not_a_run_is_said_so_in_plain_words(tmp_path: Path) -> None:
    a_file = tmp_path / "README.md"
    a_file.write_text("# not a run\n")
    for path, what in ((a_file, "no such directory"), (tmp_path, "no run.json")):
        assert_not_opened(
            path,
            tmp_path,
            f"{path}: not a lensjobs run ({what}); give the directory 'lensjobs submit' made",
        )
