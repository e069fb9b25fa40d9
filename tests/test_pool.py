"""The workflow on a real personal HTCondor pool (containers/minicondor), driven as a user on
an access point would: `lensjobs submit`, condor_q, condor_vacate_job, condor_rm,
`lensjobs status`, `lensjobs resubmit`, `lensjobs pull`, all run inside the pool's root as
its user. Jobs run from the images `make images` built (the default), and see nothing of
the access point.

One run of 40 simulated candidates (quick preset, --infer-gpus 0) in fit jobs of 8, each
checkpointing every 15 s, carries every fault: one candidate's r band is dead but for its
centre, so it ends FAILED and its batch goes on; one batch job is evicted mid-batch
(condor_vacate_job) and goes on from its checkpoint; another is removed (condor_rm) and
retried by DAGMan; a third is held and shown as held with its reason; then the DAGMan job
itself is removed mid-run and `lensjobs resubmit` goes on without fitting a finished
candidate again.
At the end `resubmit --nodes` fits the repaired candidate, and only it, again. `make test`
brings the pool up; without it these tests fail in CI and are skipped elsewhere."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from astropy.io import fits

from lensjobs.simulate import simulate_catalog
from lensjobs.workflow.read import parse_status

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "containers" / "minicondor" / "pool.sh"
POOL_DIR = Path(os.environ.get("LENSJOBS_POOL_DIR", "/var/tmp/lensjobs-pool"))
SHARE = POOL_DIR / "share"
NAME = "pooltest"
N, PER_JOB = 40, 8
BAD = 0  # its r band is dead but for its centre: passes validation, cannot be fitted
EVICTED, REMOVED, HELD = "fits_2", "fits_3", "fits_5"


def in_pool(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A shell command inside the pool's root, as its user."""
    return subprocess.run(
        [str(POOL), "run", command], capture_output=True, text=True, timeout=timeout
    )


def lensjobs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    words = " ".join(shlex.quote(str(a)) for a in args)
    return in_pool(f"{shlex.quote(sys.executable)} -m lensjobs {words}", timeout=300)


def queued(cluster: int) -> bool:
    return bool(in_pool(f"condor_q {cluster} -af ClusterId").stdout.strip())


def job_of(node: str, running: bool = False) -> str:
    """The job id of a node's job in the queue ('' when none)."""
    const = f'DAGNodeName == "{node}"' + (" && JobStatus == 2" if running else "")
    said = in_pool(f"condor_q -const '{const}' -af ClusterId ProcId").stdout.split()
    return f"{said[0]}.{said[1]}" if len(said) == 2 else ""


def wait_for(condition, timeout: float, what: str, every: float = 1.0, run: Path | None = None):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(every)
    said = f"timed out after {timeout:.0f} s waiting for {what}"
    if run is not None:  # where the DAG stands, to tell why
        status = lensjobs("status", run)
        queue = in_pool("condor_q -nobatch -af ClusterId DAGNodeName JobStatus HoldReason")
        dagman = (run / "lensjobs.dag.dagman.out").read_text(errors="replace").splitlines()
        said += "\n" + "\n".join([status.stdout, status.stderr, queue.stdout, *dagman[-40:]])
    raise AssertionError(said)


def submitted_nodes(log: str) -> list[str]:
    """Nodes whose jobs were submitted (once per try), from a DAG's node event log: the
    line after each 'Job submitted' event names the node."""
    lines = log.splitlines()
    return sorted(
        lines[k + 1].split("DAG Node: ")[1]
        for k, line in enumerate(lines[:-1])
        if "Job submitted" in line and "DAG Node: " in lines[k + 1]
    )


def digests(run: Path) -> dict[str, str]:
    """sha256 of every result tarball: a candidate fitted again gets a new one (its
    params.json records the CPU time it took)."""
    return {
        p.name.removesuffix(".tar.gz"): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (run / "results").glob("*.tar.gz")
    }


def batch_ids(run: Path, node: str) -> list[str]:
    return (run / "batches" / node.removeprefix("fits_") / "ids.txt").read_text().split()


def spooled_fits(job: str) -> dict[str, str]:
    """Finished fits (sha256 of their tarballs) in the checkpoint HTCondor holds for a job."""
    where = in_pool(f"condor_evicted_files dir {job}").stdout.split()
    if not where:
        return {}
    listed = in_pool(f"cd {where[-1]} 2>/dev/null && sha256sum out/*/*.tar.gz").stdout
    return {
        Path(name).name.removesuffix(".tar.gz"): digest
        for digest, name in (line.split() for line in listed.splitlines() if line.strip())
    }


@pytest.fixture(scope="module")
def pool() -> None:
    up = POOL.exists() and shutil.which("chroot") and os.geteuid() == 0
    if up:
        up = in_pool("condor_status -af Name").stdout.strip() != ""
    if not up:
        message = "the personal HTCondor pool is not up (containers/minicondor/pool.sh up)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def work(pool: None) -> Path:
    folder = SHARE / f"tests-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    folder.chmod(0o1777)  # the pool's user writes the run here
    clean = simulate_catalog(folder / "clean.fits", N, seed=31, workers=2)
    with fits.open(clean) as hdul:
        # A dead band but for a patch at its centre: validation passes it (not constant),
        # its sky has no noise at all (rms 0), so it cannot be fitted.
        band = hdul["IMAGES"].data[BAD, 1]
        patch = band[20:25, 20:25].copy()
        band[:] = 5.0
        band[20:25, 20:25] = patch
        hdul.writeto(folder / "candidates.fits")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def first_run(work: Path) -> dict:
    """Submit; evict one batch job, remove another, hold a third; remove the DAGMan job
    while that one is held and resubmit; wait for the end."""
    ids = [str(i) for i in fits.getdata(work / "candidates.fits", "CATALOG")["COADD_OBJECT_ID"]]
    run = work / "runs" / NAME
    submit = lensjobs(
        "submit", work / "candidates.fits", "--runs-dir", work / "runs", "--name", NAME,
        "--preset", "quick", "--infer-gpus", "0", "--fits-per-job", PER_JOB,
        "--checkpoint-every", "15",
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout + submit.stderr
    cluster = json.loads((run / "run.json").read_text())["submissions"][-1]["cluster"]
    batch_names = in_pool("condor_q -af JobBatchName").stdout.split()

    # Two batch jobs held as soon as they are queued, so that what follows happens while
    # they have not run: one is removed later while it runs, one stays held.
    for node in (REMOVED, HELD):
        const = f'DAGNodeName == "{node}"'
        wait_for(
            lambda c=const: in_pool(f"condor_hold -const '{c}'").returncode == 0,
            600,
            f"{node} to be queued",
            run=run,
        )

    # Evicted mid-batch, once its checkpoint holds a finished fit and before the job ends.
    wait_for(lambda: job_of(EVICTED, running=True), 600, f"{EVICTED} to run", 0.5, run)
    evicted = job_of(EVICTED)
    wait_for(lambda: spooled_fits(evicted), 300, f"a checkpoint of {EVICTED} with a fit", run=run)
    before_eviction = spooled_fits(evicted)
    vacated = in_pool(f"condor_vacate_job {evicted}")
    assert vacated.returncode == 0, vacated.stderr

    # Removed while it runs: DAGMan retries it.
    assert in_pool(f"condor_release -const 'DAGNodeName == \"{REMOVED}\"'").returncode == 0
    wait_for(lambda: job_of(REMOVED, running=True), 600, f"{REMOVED} to run", 0.5, run)
    removed = in_pool(f"condor_rm -const 'DAGNodeName == \"{REMOVED}\"'")
    assert removed.returncode == 0, removed.stderr

    shown = []

    def status_shows_held() -> bool:  # DAGMan rewrites its status file only every few s
        shown.append(lensjobs("status", run).stdout)
        return f"held {HELD}: " in shown[-1] and f"held {REMOVED}: " not in shown[-1]

    wait_for(status_shows_held, 180, "lensjobs status to show the held node", 5, run)
    held_ad = in_pool(f"condor_q -l -const 'DAGNodeName == \"{HELD}\"'").stdout

    # The DAGMan job removed mid-run, its held node among those it takes with it. (The
    # first two batches end first: the evicted one's checkpoint would go with it.)
    def filed(*nodes: str) -> bool:
        ids = [cid for node in nodes for cid in batch_ids(run, node)]
        return all((run / "results" / f"{cid}.tar.gz").exists() for cid in ids)

    wait_for(lambda: filed("fits_1", EVICTED), 600, f"fits_1 and {EVICTED} to end", run=run)

    def removed_retried() -> bool:  # DAGMan resubmits it only after its POST script
        log = (run / "lensjobs.dag.nodes.log").read_text()
        return submitted_nodes(log).count(REMOVED) >= 2

    wait_for(removed_retried, 300, f"DAGMan to retry {REMOVED}", run=run)
    finished_before = digests(run)
    assert in_pool(f"condor_rm {cluster}").returncode == 0
    # At once: the removed DAGMan job stays in the queue (state X) while it removes its
    # nodes and runs the FINAL node, and a second DAGMan on the directory would fight it.
    too_early = lensjobs("resubmit", run)
    wait_for(lambda: not queued(cluster), 600, "the removed DAG to leave the queue", 2, run)
    after_removal = lensjobs("status", run)
    first_log = (run / "lensjobs.dag.nodes.log").read_text()
    resumed = lensjobs("resubmit", run)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after_resubmit = lensjobs("status", run)
    second = json.loads((run / "run.json").read_text())["submissions"][-1]["cluster"]
    wait_for(lambda: not queued(second), 900, "the resubmitted DAG to end", 3, run)
    return {
        "ids": ids,
        "run": run,
        "submit": submit.stdout,
        "batch_names": batch_names,
        "before_eviction": before_eviction,
        "held_status": shown[-1],
        "too_early": too_early,
        "after_removal": after_removal,
        "after_resubmit": after_resubmit,
        "held_ad": held_ad,
        "finished_before_removal": finished_before,
        "first_log": first_log,
        "status": lensjobs("status", run),
        "status_file": (run / "lensjobs.dag.status").read_text(),
        "nodes_log": (run / "lensjobs.dag.nodes.log").read_text(),
    }


def test_jobs_run_from_the_images(first_run: dict) -> None:
    info = json.loads((first_run["run"] / "run.json").read_text())
    fit, infer = info["images"]["fit"], info["images"]["infer"]
    assert fit["source"] == infer["source"] == "make images"
    assert Path(fit["path"]).name.startswith("lensjobs-fit-")
    # A local image is transferred with the job and named by its file name there.
    assert f'ContainerImage = "{Path(fit["path"]).name}"' in first_run["held_ad"]
    assert fit["container_image"] in first_run["held_ad"].split("TransferInput = ")[1]
    assert f"fit image: {fit['container_image']} (make images)" in first_run["submit"]
    sub = (first_run["run"] / "infer.sub").read_text()
    assert f"container_image           = {infer['container_image']}" in sub
    for name in ("infer.sub", "fit.sub"):  # no path into the access point's Python
        text = (first_run["run"] / name).read_text()
        assert sys.prefix not in text and sys.base_prefix not in text


def test_a_job_in_the_fit_image_sees_nothing_of_the_access_point(
    first_run: dict, work: Path
) -> None:
    """The execute side shares nothing: not this Python, its venv, the repository or the
    run directories; it has lensjobs from the image, and no torch."""
    image = json.loads((first_run["run"] / "run.json").read_text())["images"]["fit"]
    probe = work / "probe"
    probe.mkdir()
    probe.chmod(0o1777)
    paths = [sys.prefix, sys.base_prefix, str(REPO), str(work)]
    (probe / "probe.sh").write_text(
        "#!/bin/bash\n"
        f"for p in {' '.join(paths)}; do [ -e $p ] && echo visible $p || echo absent $p; done\n"
        "python3 -c 'import lensjobs.fit.node; print(\"lensjobs\", lensjobs.__version__)'\n"
        "python3 -c 'import torch' 2>/dev/null && echo torch || echo no torch\n"
    )
    (probe / "probe.sh").chmod(0o755)
    (probe / "probe.sub").write_text(
        f"executable = probe.sh\ncontainer_image = {image['container_image']}\n"
        "output = probe.out\nerror = probe.err\nlog = probe.log\n"
        "should_transfer_files = YES\nrequest_disk = 1GB\nqueue\n"
    )
    ran = in_pool(f"cd {probe} && condor_submit probe.sub && condor_wait probe.log", 300)
    assert ran.returncode == 0, ran.stderr
    said = (probe / "probe.out").read_text().splitlines()
    assert said == [f"absent {p}" for p in paths] + [f"lensjobs {version('lensjobs')}", "no torch"]


def test_submit_prints_the_cluster_and_condor_q_shows_the_batch(first_run: dict) -> None:
    assert f"batch name lensjobs:{NAME}" in first_run["submit"]
    assert "submitted DAG cluster " in first_run["submit"]
    assert f"{N} candidates to fit in 5 fit job(s) of up to {PER_JOB}" in first_run["submit"]
    assert f"lensjobs:{NAME}" in first_run["batch_names"]


def test_every_candidate_ends_and_the_unfittable_one_is_reported(first_run: dict) -> None:
    run, ids, bad = first_run["run"], first_run["ids"], first_run["ids"][BAD]
    status = first_run["status"]
    assert status.returncode == 0
    assert "DAG succeeded" in status.stdout, status.stdout
    assert f"candidates: {N}/{N} finished (" in status.stdout
    assert "1 FAILED" in status.stdout
    assert f"FAILED {bad} (fits_1): unusable prior: BKG_RMS_R = 0.0" in status.stdout
    assert sorted(digests(run)) == sorted(ids)  # every candidate has its result
    mates = batch_ids(run, "fits_1")
    assert bad in mates and len(mates) > 1
    for mate in mates:  # the batch went on past the unfittable one
        flag = json.loads((run / "nodes" / mate / "params.json").read_text())["flag"]
        assert (flag == "FAILED") == (mate == bad)
    failed = (run / "summary" / "failed.txt").read_text()
    assert f"{bad}\tFAILED\tunusable prior: BKG_RMS_R = 0.0" in failed  # FINAL node ran
    assert (run / "summary" / "catalog.fits").exists()
    assert submitted_nodes(first_run["first_log"]).count("fits_1") == 1  # no retry


def test_an_evicted_batch_job_goes_on_from_its_checkpoint(first_run: dict) -> None:
    run, spooled = first_run["run"], first_run["before_eviction"]
    assert spooled and set(spooled) < set(batch_ids(run, EVICTED))
    final = digests(run)
    for cid, digest in spooled.items():  # finished before the eviction: never fitted again
        assert final[cid] == digest
    log = first_run["first_log"]
    assert "Job was evicted" in log
    assert submitted_nodes(log).count(EVICTED) == 1  # the same job went on: no DAG retry
    assert all(cid in final for cid in batch_ids(run, EVICTED))


def test_a_removed_batch_job_is_retried(first_run: dict) -> None:
    log = first_run["first_log"]
    assert "Job was aborted" in log
    assert submitted_nodes(log).count(REMOVED) >= 2  # removed, then retried by DAGMan


def test_a_held_job_is_shown_with_its_reason(first_run: dict) -> None:
    assert f"held {HELD}: held: via condor_hold" in first_run["held_status"]
    assert "1 held" in first_run["held_status"]
    for cid in batch_ids(first_run["run"], HELD):  # its DAG removed, then resubmitted
        assert (first_run["run"] / "results" / f"{cid}.tar.gz").exists()


def test_after_the_dagman_job_is_removed_resubmit_goes_on_and_refits_nothing(
    first_run: dict,
) -> None:
    run, before = first_run["run"], first_run["finished_before_removal"]
    too_early = first_run["too_early"]  # while the removed DAGMan job was still queued
    assert too_early.returncode == 2, too_early.stdout + too_early.stderr
    assert too_early.stderr.strip() == (
        f"error: {run}: its DAG is still queued or running; wait for it "
        f"(lensjobs status {run}) or remove it with condor_rm first"
    )
    # Never "running" for a DAG nobody runs, nor the old DAG's state for the new one.
    removal, resubmit = first_run["after_removal"], first_run["after_resubmit"]
    assert removal.stdout.startswith((f"{NAME}: DAG failed", f"{NAME}: DAG stopped")), (
        removal.stdout + removal.stderr
    )
    assert resubmit.stdout.startswith((f"{NAME}: DAG starting", f"{NAME}: DAG running")), (
        resubmit.stdout + resubmit.stderr
    )
    final = digests(run)
    assert before and all(final[cid] == digest for cid, digest in before.items())
    second = submitted_nodes(first_run["nodes_log"])  # DAGMan starts the log anew
    for node in ("fits_1", EVICTED):  # ended before the removal: never submitted again
        assert node not in second
    assert "aggregate" in second


def test_status_reads_dagmans_node_status_file_as_classads_do(first_run: dict) -> None:
    import classad2

    text = first_run["status_file"]
    ads = [dict(ad) for ad in classad2.parseAds(text)]
    assert ads[0].pop("DagFiles") == ["lensjobs.dag"]  # the one list: not read, not needed
    assert parse_status(text) == ads


def test_resubmit_nodes_refits_only_that_candidate_then_pull(first_run: dict, work: Path) -> None:
    run, ids, bad = first_run["run"], first_run["ids"], first_run["ids"][BAD]
    before = digests(run)
    # The fix: the candidate's cutout repaired and its fit input derived again.
    fixed = work / "fixed"
    for step in (
        ("node", "infer", work / "clean.fits", "--out", fixed),
        ("node", "split", work / "clean.fits", fixed / "priors.fits", "--out", fixed / "nodes"),
    ):
        assert lensjobs(*step).returncode == 0
    shutil.copy(fixed / "nodes" / bad / "input.fits", run / "nodes" / bad / "input.fits")

    again = lensjobs("resubmit", run, "--nodes", bad)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 candidate(s) to fit again, in 1 fit job(s)" in again.stdout
    cluster = json.loads((run / "run.json").read_text())["submissions"][-1]["cluster"]
    wait_for(lambda: not queued(cluster), 600, "the resubmitted DAG to end", every=3)

    assert submitted_nodes((run / "lensjobs.dag.nodes.log").read_text()) == [
        "aggregate",
        "fits_1",
    ]
    after = digests(run)
    assert {c: d for c, d in after.items() if c != bad} == {
        c: d for c, d in before.items() if c != bad
    }  # its batch-mates were not fitted again
    assert after[bad] != before[bad]
    status = lensjobs("status", run)
    assert "DAG succeeded" in status.stdout, status.stdout
    assert json.loads((run / "nodes" / bad / "params.json").read_text())["flag"] != "FAILED"
    assert bad not in (run / "summary" / "failed.txt").read_text()

    pulled = lensjobs("pull", run, "--to", work / "pulled")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert f"extracted {len(ids)} fit result(s)" in pulled.stdout
    for cid in ids:
        assert (work / "pulled" / "nodes" / cid / "params.json").exists()
    assert (work / "pulled" / f"lensjobs_{NAME}_results" / "index.html").exists()


def test_condor_submit_dag_is_the_fallback_submitter(work: Path) -> None:
    """Where the bindings cannot submit, the same DAG goes in through condor_submit_dag."""
    made = lensjobs(
        "submit", work / "clean.fits", "--runs-dir", work / "runs", "--name", "bytools",
        "--preset", "quick", "--infer-gpus", "0", "--dry-run",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    run = work / "runs" / "bytools"
    code = (
        "from pathlib import Path; from lensjobs.workflow.condor import submit_with_tools; "
        "from lensjobs.workflow.run import open_run; "
        f"print(submit_with_tools(open_run(Path('{run}'))))"
    )
    submitted = in_pool(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    assert submitted.returncode == 0, submitted.stderr
    cluster = int(submitted.stdout.split()[-1])
    try:
        names = in_pool(f"condor_q {cluster} -af JobBatchName").stdout.split()
        assert names == ["lensjobs:bytools"]
    finally:
        in_pool(f"condor_rm {cluster}")
    wait_for(lambda: not queued(cluster), 120, "the removed DAG to leave the queue", every=2)


def test_an_ospool_dry_run_is_accepted_by_condor_submit(first_run: dict, work: Path) -> None:
    """OSDF transfers cannot be tried here: the rendered files are checked by HTCondor's own
    condor_submit -dry-run instead (URLs, container image, duration category, GPU asks)."""
    osdf = "osdf:///ospool/ap40/data/astro/lensjobs"
    images = json.loads((first_run["run"] / "run.json").read_text())["images"]
    made = lensjobs(
        "submit", work / "clean.fits", "--runs-dir", work / "runs", "--name", "ospool",
        "--osdf-dir", osdf, "--fit-image", images["fit"]["path"],
        "--infer-image", images["infer"]["path"], "--infer-gpu-memory", "10GB",
        "--project", "UW_Astro", "--dry-run",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    run = work / "runs" / "ospool"
    catalogue = json.loads((run / "run.json").read_text())["input"]["osdf"]
    checked = in_pool(f"cd {run} && condor_submit -dry-run - infer.sub")
    assert checked.returncode == 0, checked.stderr
    ad = dict(line.split("=", 1) for line in checked.stdout.splitlines() if "=" in line)
    infer_image = Path(images["infer"]["path"]).name
    assert ad["ContainerImage"] == f'"{infer_image}"'
    assert ad["ContainerImageSource"] == '"osdf"'
    inputs = ad["TransferInput"].strip('"').split(",")
    assert catalogue in inputs and f"{osdf}/{infer_image}" in inputs
    assert 'stringListIMember("osdf",TARGET.HasFileTransferPluginMethods)' in ad["Requirements"]
    assert ad["JobDurationCategory"] == '"Medium"'
    assert ad["ProjectName"] == '"UW_Astro"'
    assert ad["GPUsMinMemory"] == "10240"
