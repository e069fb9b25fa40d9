"""The workflow on a real personal HTCondor pool (containers/minicondor), driven as a user on
an access point would: `lensjobs submit`, condor_q, condor_rm, `lensjobs status`,
`lensjobs resubmit`, `lensjobs pull`, all run inside the pool's root as its user. Jobs run
from the images `make images` built (the default), and see nothing of the access point.

One run of four simulated lenses (quick preset, --infer-gpus 0) carries every fault: one
candidate's r band is constant, so its fit fails for good (exit 2); another's fit job is
removed while it runs and must be retried; a third is held by hand, shown as held with its
reason, then released. `make test` brings the pool up; without it these
tests fail in CI and are skipped elsewhere."""

from __future__ import annotations

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
SHARE = Path(os.environ.get("LENSJOBS_POOL_DIR", "/var/tmp/lensjobs-pool")) / "share"
NAME = "pooltest"
# Rows: a constant r band (its fit exits 2); a fit job removed while it runs; one held.
BAD, KILLED, HELD = 0, 1, 3


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


def wait_for(condition, timeout: float, what: str, every: float = 1.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def submitted_nodes(log: str) -> list[str]:
    """Nodes whose jobs were submitted (once per try), from a DAG's node event log: the
    line after each 'Job submitted' event names the node."""
    lines = log.splitlines()
    return sorted(
        lines[k + 1].split("DAG Node: ")[1]
        for k, line in enumerate(lines[:-1])
        if "Job submitted" in line and "DAG Node: " in lines[k + 1]
    )


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
    clean = simulate_catalog(folder / "clean.fits", 4, seed=31, workers=2)
    with fits.open(clean) as hdul:
        hdul["IMAGES"].data[BAD, 1] = 5.0  # a dead band: passes validation, unfittable
        hdul.writeto(folder / "candidates.fits")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def first_run(work: Path) -> dict:
    """Submit, watch, remove one running fit job, wait for the DAG to end."""
    ids = [str(i) for i in fits.getdata(work / "candidates.fits", "CATALOG")["COADD_OBJECT_ID"]]
    run = work / "runs" / NAME
    submit = lensjobs(
        "submit", work / "candidates.fits", "--runs-dir", work / "runs", "--name", NAME,
        "--preset", "quick", "--infer-gpus", "0",
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout + submit.stderr
    cluster = json.loads((run / "run.json").read_text())["submissions"][-1]["cluster"]
    batch_names = in_pool("condor_q -af JobBatchName").stdout.split()

    killed_node = f"fit_{ids[KILLED]}"
    running = f'DAGNodeName == "{killed_node}" && JobStatus == 2'

    def fit_running() -> bool:
        return bool(in_pool(f"condor_q -const '{running}' -af ClusterId").stdout.strip())

    wait_for(fit_running, 300, f"{killed_node} to run", every=0.5)
    removed = in_pool(f"condor_rm -const 'DAGNodeName == \"{killed_node}\"'")
    assert removed.returncode == 0, removed.stderr

    held_node = f"fit_{ids[HELD]}"
    held_job = f'DAGNodeName == "{held_node}"'
    wait_for(
        lambda: in_pool(f"condor_hold -const '{held_job}'").returncode == 0,
        300,
        f"{held_node} to be queued",
    )
    shown = []

    def status_shows_held() -> bool:
        shown.append(lensjobs("status", run).stdout)
        return f"held {held_node}: " in shown[-1]

    wait_for(status_shows_held, 120, "lensjobs status to show the held node", every=5)
    held_ad = in_pool(f"condor_q -l -const '{held_job}'").stdout
    released = in_pool(f"condor_release -const '{held_job}'")
    assert released.returncode == 0, released.stderr
    wait_for(lambda: not queued(cluster), 600, "the DAG to end", every=3)
    return {
        "ids": ids,
        "run": run,
        "submit": submit.stdout,
        "batch_names": batch_names,
        "held_status": shown[-1],
        "held_ad": held_ad,
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
    assert f"lensjobs:{NAME}" in first_run["batch_names"]


def test_a_permanent_failure_is_reported_and_rescued(first_run: dict) -> None:
    run, bad = first_run["run"], first_run["ids"][BAD]
    status = first_run["status"]
    assert status.returncode == 0
    assert "DAG failed" in status.stdout
    assert f"failed fit_{bad}: exit code 2" in status.stdout
    assert "unusable prior: BKG_RMS_R = 0.0" in status.stdout  # from the job's stderr
    assert (run / "lensjobs.dag.rescue001").exists()
    failed = (run / "summary" / "failed.txt").read_text()
    assert f"{bad}\tfit_{bad}\t" in failed  # the FINAL node ran and reported it
    assert (run / "summary" / "catalog.fits").exists()
    assert (run / "summary" / "index.html").exists()
    tries = submitted_nodes(first_run["nodes_log"])
    assert tries.count(f"fit_{bad}") == 1  # RETRY ... UNLESS-EXIT 2: no retry
    assert tries.count(f"fit_{first_run['ids'][KILLED]}") == 2  # removed, then retried


def test_a_held_job_is_shown_with_its_reason_and_goes_on_when_released(first_run: dict) -> None:
    held = first_run["ids"][HELD]
    assert f"held fit_{held}: held: via condor_hold" in first_run["held_status"]
    assert "1 held" in first_run["held_status"]
    params = json.loads((first_run["run"] / "nodes" / held / "params.json").read_text())
    assert params["flag"] != "FAILED"


def test_status_reads_dagmans_node_status_file_as_classads_do(first_run: dict) -> None:
    import classad2

    text = first_run["status_file"]
    ads = [dict(ad) for ad in classad2.parseAds(text)]
    assert ads[0].pop("DagFiles") == ["lensjobs.dag"]  # the one list: not read, not needed
    assert parse_status(text) == ads


def test_a_removed_fit_job_is_retried_and_completes(first_run: dict) -> None:
    run, killed = first_run["run"], first_run["ids"][KILLED]
    log = first_run["nodes_log"]
    assert "Job was aborted" in log
    assert json.loads((run / "nodes" / killed / "params.json").read_text())["flag"] != "FAILED"
    assert (run / "results" / f"{killed}.tar.gz").exists()
    ads = first_run["status_file"].split("[")
    node_ad = next(ad for ad in ads if f'Node = "fit_{killed}";' in ad)
    assert "RetryCount = 1;" in node_ad
    assert "NodeStatus = 5;" in node_ad  # DONE


def test_resubmit_runs_only_the_fixed_node_then_pull(first_run: dict, work: Path) -> None:
    run, ids, bad = first_run["run"], first_run["ids"], first_run["ids"][BAD]
    finished = {
        cid: (run / "nodes" / cid / "params.json").stat().st_mtime_ns for cid in ids if cid != bad
    }
    # The fix: the candidate's cutout repaired and its fit input derived again.
    fixed = work / "fixed"
    for step in (
        ("node", "infer", work / "clean.fits", "--out", fixed),
        ("node", "split", work / "clean.fits", fixed / "priors.fits", "--out", fixed / "nodes"),
    ):
        assert lensjobs(*step).returncode == 0
    shutil.copy(fixed / "nodes" / bad / "input.fits", run / "nodes" / bad / "input.fits")

    again = lensjobs("resubmit", run)
    assert again.returncode == 0, again.stdout + again.stderr
    cluster = json.loads((run / "run.json").read_text())["submissions"][-1]["cluster"]
    wait_for(lambda: not queued(cluster), 600, "the resubmitted DAG to end", every=3)

    log, before = (run / "lensjobs.dag.nodes.log").read_text(), first_run["nodes_log"]
    second = log[len(before) :] if log.startswith(before) else log  # DAGMan starts it anew
    assert submitted_nodes(second) == ["aggregate", f"fit_{bad}"]
    for cid, mtime in finished.items():  # nothing that finished ran again
        assert (run / "nodes" / cid / "params.json").stat().st_mtime_ns == mtime
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
