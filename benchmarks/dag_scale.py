"""A DAG of 100,000 candidates run to the end on the personal pool, its fits trivial: how
DAGMan, the schedd and our PRE/POST scripts cope with a catalogue that size.

    LENSJOBS_POOL_CPUS=8 containers/minicondor/pool.sh up && make images
    .venv/bin/python benchmarks/dag_scale.py [--n 100000] [--fits-per-job 71]

The catalogue is a 100-system simulation tiled to size (new IDs). It is submitted inside the
pool's root, as its user, with the testing-only ``trivial`` preset (``LENSJOBS_TESTING=1``:
each fit records "not fitted" without reading its input) and the standard preset's batch size
(71), so the DAG has the shape a real 100,000-candidate run has. Infer runs on CPU
(``--infer-gpus 0``). Every 5 s the script samples the resident memory of condor_dagman
and condor_schedd (``ps``) and the DAG's node event log; at the end it times
``lensjobs status``. Every figure printed is measured here.

A trivial fit job is mostly waiting (image and Python start-up, transfers), so a pool that
advertises more CPUs than the machine has (``LENSJOBS_POOL_CPUS``) runs more at once; the
script prints what the pool advertised.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lensjobs.workflow.read import read_status_file

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "containers" / "minicondor" / "pool.sh"
SHARE = Path("/var/tmp/lensjobs-pool/share")


def dagman_setting(name: str) -> int:
    """A number from the DAGMan configuration we ship."""
    for line in (REPO / "submit" / "dagman.config").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return int(value)
    raise KeyError(name)


# Past this many idle jobs DAGMan submits a node only when a job starts.
DAGMAN_MAX_JOBS_IDLE = dagman_setting("DAGMAN_MAX_JOBS_IDLE")


def in_pool(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(POOL), "run", command], capture_output=True, text=True)


def rss_mb(process: str) -> float:
    """The largest resident set of the processes with this name, in MB (0 when none)."""
    said = subprocess.run(["ps", "-C", process, "-o", "rss="], capture_output=True, text=True)
    sizes = [int(w) for w in said.stdout.split()]
    return max(sizes, default=0) / 1024


def node_events(log: Path) -> dict[str, list[tuple[str, float]]]:
    """(event, time) per node from the DAG's node log: submitted, executing, terminated."""
    import htcondor2

    kinds = {
        htcondor2.JobEventType.SUBMIT: "submitted",
        htcondor2.JobEventType.EXECUTE: "executing",
        htcondor2.JobEventType.JOB_TERMINATED: "terminated",
    }
    node_of: dict[int, str] = {}
    events: dict[str, list[tuple[str, float]]] = {}
    if not log.exists():
        return events
    for event in htcondor2.JobEventLog(str(log)).events(stop_after=0):
        if event.type == htcondor2.JobEventType.SUBMIT:
            node_of[event.cluster] = event.get("LogNotes", "").removeprefix("DAG Node: ")
        node = node_of.get(event.cluster)
        if node and event.type in kinds:
            events.setdefault(node, []).append((kinds[event.type], event.timestamp))
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--fits-per-job", type=int, default=71)
    args = parser.parse_args()
    work = SHARE / "bench-dag"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o1777)
    python = sys.executable
    seed = work / "seed.fits"
    subprocess.run([python, "-m", "lensjobs", "simulate", "--n", "100", "--seed", "4",
                    "--out", str(seed)], check=True, capture_output=True)  # fmt: skip
    catalog = work / "candidates.fits"
    subprocess.run([python, str(REPO / "benchmarks" / "infer_speed.py"), str(seed),
                    "--write-tiled", str(args.n // 100), str(catalog)], check=True)  # fmt: skip
    catalog.chmod(0o644)
    run = work / "runs" / "dag"
    submit = (
        f"LENSJOBS_TESTING=1 {shlex.quote(python)} -m lensjobs submit {catalog} "
        f"--runs-dir {work / 'runs'} --name dag --preset trivial --infer-gpus 0 "
        f"--fits-per-job {args.fits_per_job}"
    )
    start = time.time()
    submitted = in_pool(submit)
    submit_s = time.time() - start
    if submitted.returncode:
        sys.exit(f"submit failed: {submitted.stderr.strip()}")
    print(submitted.stdout.strip().splitlines()[0], flush=True)
    cluster = json.loads((run / "run.json").read_text())["submissions"][-1]["cluster"]
    peaks = {"condor_dagman": 0.0, "condor_schedd": 0.0}
    said = 0.0
    while in_pool(f"condor_q {cluster} -af ClusterId").stdout.strip():
        for process in peaks:
            peaks[process] = max(peaks[process], rss_mb(process))
        if time.time() - said > 60:  # a line a minute, so that a cut-short run says something
            dag, _ = read_status_file(run / "lensjobs.dag.status")
            counts = {k: dag.get(k) for k in ("NodesDone", "NodesQueued", "NodesReady")}
            print(f"+{time.time() - start:.0f} s: {counts}, peaks {peaks}", flush=True)
            said = time.time()
        time.sleep(5)
    wall = time.time() - start
    events = node_events(run / "lensjobs.dag.nodes.log")
    fits = {node: e for node, e in events.items() if node.startswith("fits_")}

    def first(node_events: list[tuple[str, float]], kind: str) -> float:
        return min(t for k, t in node_events if k == kind)

    fit_submits = [first(e, "submitted") for e in fits.values()]
    infer = events["infer"]
    aggregate = events.get("aggregate", [])
    status_start = time.time()
    status = in_pool(f"{shlex.quote(python)} -m lensjobs status {run}")
    status_s = time.time() - status_start
    dag_lines = (run / "lensjobs.dag").read_text().count("\nJOB fits_")
    cpus = in_pool("condor_status -af TotalCpus").stdout.split()[0]
    print(f"pool: {cpus} CPUs advertised, on a machine of {os.cpu_count()} cores")
    print(f"fit nodes in the DAG: {dag_lines}; fit jobs submitted: {len(fits)}")
    print(f"submit (validation, run directory, DAG, condor_submit_dag): {submit_s:.1f} s")
    print(
        f"infer job: submitted +{first(infer, 'submitted') - start:.0f} s, ran "
        f"{first(infer, 'terminated') - first(infer, 'executing'):.0f} s"
    )
    print(
        "infer POST script (the split into fit inputs) and the first PRE scripts: "
        f"{min(fit_submits) - first(infer, 'terminated'):.0f} s"
    )
    fit_submits.sort()
    idle_cap = fit_submits[:DAGMAN_MAX_JOBS_IDLE][-1]
    print(
        f"fit jobs: first submitted +{fit_submits[0] - start:.0f} s; the first "
        f"{min(len(fit_submits), DAGMAN_MAX_JOBS_IDLE)} (DAGMan's idle cap) by "
        f"+{idle_cap - start:.0f} s ({idle_cap - fit_submits[0]:.0f} s after the first); every "
        f"one by +{fit_submits[-1] - start:.0f} s"
    )
    if aggregate:
        ran = first(aggregate, "terminated") - first(aggregate, "executing")
        print(f"aggregate: ran {ran:.0f} s")
    print(f"whole DAG: {wall / 60:.1f} min")
    print(
        f"peak RSS: condor_dagman {peaks['condor_dagman']:.0f} MB, condor_schedd "
        f"{peaks['condor_schedd']:.0f} MB (sampled every 5 s)"
    )
    print(f"lensjobs status at the end: {status_s:.1f} s (exit {status.returncode})")
    print("\n".join(status.stdout.splitlines()[:3]))


if __name__ == "__main__":
    main()
