"""``lensjobs pull``: copy a run's results somewhere else, verified. Every fit tarball is
checked against results/MANIFEST (sha256, written by the aggregate node) before it is
extracted into DIR/nodes/<ID>/ and copied to DIR/results/; the summary tarball is extracted
to DIR/lensjobs_<name>_results/ (and copied there), its members checked against its own
MANIFEST. Every link of the gallery (../nodes/<ID>/, ../results/<ID>.tar.gz, the summary
tarball) then resolves in DIR as it does in the run directory."""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from lensjobs.files import read_manifest, sha256_of
from lensjobs.ids import SAFE_ID
from lensjobs.workflow.batches import candidate_batches
from lensjobs.workflow.run import Run, RunError


@dataclass
class Pulled:
    summary: Path
    extracted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def summary_tarball(run: Run) -> Path:
    return run.summary / f"lensjobs_{run.name}_results.tar.gz"


def _extract(tarball: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")  # no absolute paths, links out or devices


def _copy(path: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, into / path.name)


def pull_results(run: Run, to: Path) -> Pulled:
    manifest = run.results / "MANIFEST"
    summary = summary_tarball(run)
    if not manifest.exists() or not summary.exists():
        raise RunError(
            f"{run.dir}: no results yet (results/MANIFEST or the summary tarball is missing); "
            f"the aggregate node writes them when the DAG ends (lensjobs status {run.dir})"
        )
    pulled = Pulled(to / summary.name.removesuffix(".tar.gz"))
    entries = read_manifest(manifest)
    for name, digest in sorted(entries.items()):
        cid = name.removesuffix(".tar.gz")
        if not SAFE_ID.fullmatch(cid) or name != f"{cid}.tar.gz":
            raise RunError(f"{manifest}: {name!r} is not a result tarball name; is it damaged?")
        tarball = run.results / name
        if not tarball.exists() or sha256_of(tarball) != digest:
            pulled.corrupt.append(name)
            continue
        _extract(tarball, to / "nodes")
        _copy(tarball, to / "results")
        pulled.extracted.append(cid)
    _extract(summary, to)
    _copy(summary, pulled.summary)
    for name, digest in read_manifest(pulled.summary / "MANIFEST").items():
        member = pulled.summary / name
        if not member.is_file() or sha256_of(member) != digest:
            pulled.corrupt.append(f"{summary.name}:{name}")
    failed = pulled.summary / "failed.txt"
    if failed.exists():
        lines = failed.read_text().splitlines()
        pulled.failed = [line for line in lines if line.strip() and not line.startswith("#")]
    reported = {line.split("\t")[0] for line in pulled.failed}
    fitted = candidate_batches(run.dir)
    pulled.missing = [c for c in fitted if f"{c}.tar.gz" not in entries and c not in reported]
    return pulled
