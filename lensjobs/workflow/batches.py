"""Fit batches: which candidates each fit node ``fits_<k>`` fits, and the two DAG scripts
that run around its job on the access point.

``RUN/batches/<k>/`` holds ``ids.txt`` (the batch's candidates, written by submit), ``in/``
(the inputs this attempt fits, staged by the PRE script), ``out/`` (what the job sends
back, and its checkpoint), the job's ``fit.out``/``fit.err``, and ``outcomes.tsv`` (one
line per candidate fitted: ID, flag, CPU seconds, Unix time filed, reason; the POST
script appends it).

- ``stage`` (PRE): stage the inputs of the candidates without a result; none left → the
  node is skipped (DAGMan's PRE_SKIP), so a finished candidate never runs again.
- ``collect`` (POST): move each finished candidate's outputs to ``nodes/<ID>/`` and its
  tarball to ``results/``, record its outcome; unfinished ones keep their checkpoint in
  ``out/`` for the retry. The node succeeds only when every candidate has a result.

DAGMan runs them in the run directory as ``python -m lensjobs.workflow.batches stage K``
and ``... collect K $RETURN``: standard library only, as two scripts per batch run on the
access point (0.1 s each, not the CLI's 0.9 s).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lensjobs.files import fsync
from lensjobs.ids import SAFE_ID

BATCHES = "batches"
NODE_PREFIX = "fits_"
# The PRE script's exit code for "nothing left to fit": DAGMan's PRE_SKIP marks the node
# done without submitting its job.
SKIP = 3


class BatchError(Exception):
    """A batch's files that cannot be used; the message is one line."""


def batch_node(k: int) -> str:
    return f"{NODE_PREFIX}{k}"


def batch_number(node: str) -> int | None:
    """k of a fit node ``fits_<k>``; None for infer, aggregate or anything else."""
    digits = node.removeprefix(NODE_PREFIX)
    return int(digits) if node.startswith(NODE_PREFIX) and digits.isdigit() else None


def split_batches(ids: list[str], per_job: int) -> list[list[str]]:
    """Consecutive candidates in batches of ``per_job``, numbered from 1 in the DAG."""
    return [ids[start : start + per_job] for start in range(0, len(ids), per_job)]


def batch_dir(run_dir: Path, k: int) -> Path:
    return run_dir / BATCHES / str(k)


def write_batches(run_dir: Path, batches: list[list[str]]) -> None:
    for k, ids in enumerate(batches, 1):
        folder = batch_dir(run_dir, k)
        folder.mkdir(parents=True)
        (folder / "ids.txt").write_text("".join(f"{cid}\n" for cid in ids))


def read_batch(run_dir: Path, k: int) -> list[str]:
    """A batch's candidate IDs, each checked: they become file names."""
    path = batch_dir(run_dir, k) / "ids.txt"
    try:
        ids = path.read_text().split()
    except OSError as error:
        raise BatchError(f"{path}: unreadable ({error.strerror or error})") from None
    for cid in ids:
        if not SAFE_ID.fullmatch(cid):
            raise BatchError(f"{path}: {cid[:40]!r} is not a candidate ID; is it damaged?")
    return ids


def batch_numbers(run_dir: Path) -> list[int]:
    folder = run_dir / BATCHES
    found = (int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else ()
    return sorted(found)


def candidate_batches(run_dir: Path) -> dict[str, int]:
    """Every fitted candidate's batch number."""
    return {cid: k for k in batch_numbers(run_dir) for cid in read_batch(run_dir, k)}


def result(run_dir: Path, cid: str) -> Path:
    return run_dir / "results" / f"{cid}.tar.gz"


def stage(run_dir: Path, k: int) -> int:
    """Link the inputs of the batch's candidates without a result into ``in/``; returns
    how many."""
    folder = batch_dir(run_dir, k)
    staged = folder / "in"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    (folder / "out").mkdir(exist_ok=True)  # sent with every attempt: checkpoints of the last
    todo = [cid for cid in read_batch(run_dir, k) if not result(run_dir, cid).exists()]
    for cid in todo:
        source = run_dir / "nodes" / cid / "input.fits"
        try:
            os.link(source, staged / f"{cid}.fits")
        except FileNotFoundError:
            raise BatchError(f"{source}: missing; did the infer node's POST script run?") from None
        except OSError:  # a file system without hard links
            shutil.copy2(source, staged / f"{cid}.fits")
    return len(todo)


@dataclass(frozen=True)
class Outcome:
    """What became of one fitted candidate, as outcomes.tsv records it."""

    id: str
    flag: str
    cpu_seconds: float
    finished: float  # Unix time it was filed on the access point
    reason: str
    batch: int


def _outcome_line(node: Path, cid: str) -> str:
    try:
        params = json.loads((node / "params.json").read_text())
    except (OSError, ValueError):
        params = {}
    params = params if isinstance(params, dict) else {}
    reason = " ".join(str(params.get("reason") or "").split())
    cpu = params.get("cpu_seconds")
    cpu = float(cpu) if isinstance(cpu, int | float) else float("nan")
    flag = params.get("flag", "FAILED")
    return f"{cid}\t{flag}\t{cpu:.2f}\t{time.time():.0f}\t{reason}\n"


def collect(run_dir: Path, k: int, code: int) -> int:
    """Bring the batch's finished candidates home; returns the node's exit code: the job's
    when it failed, 1 when it said 0 but a candidate has no result, else 0."""
    folder = batch_dir(run_dir, k)
    ids = read_batch(run_dir, k)
    out = folder / "out"
    for cid in ids:  # names from ids.txt only, never from what the job sent back
        sent = out / cid
        tarball = sent / f"{cid}.tar.gz"
        if not tarball.is_file():
            continue  # unfinished: its checkpoint stays for the next attempt
        node = run_dir / "nodes" / cid
        node.mkdir(exist_ok=True)
        for path in sent.iterdir():
            if path.is_file() and path != tarball:
                os.replace(path, node / path.name)
        fsync(tarball)  # on disk before outcomes.tsv says it is finished
        os.replace(tarball, result(run_dir, cid))
        fsync(result(run_dir, cid).parent)
        _append(folder / "outcomes.tsv", _outcome_line(node, cid))
        shutil.rmtree(sent)
    if code != 0:
        _leave_reason(run_dir, k, [cid for cid in ids if not result(run_dir, cid).exists()])
        return code
    missing = [cid for cid in ids if not result(run_dir, cid).exists()]
    if missing:
        print(
            f"{batch_node(k)}: the job ended well but {len(missing)} candidate(s) came back "
            f"without a result (first: {missing[0]}); retrying",
            file=sys.stderr,
        )
        return 1
    shutil.rmtree(folder / "in", ignore_errors=True)  # links to nodes/<ID>/input.fits
    return 0


def _leave_reason(run_dir: Path, k: int, unfinished: list[str]) -> None:
    """The failed job's last words, as each unfinished candidate's fit.err: what the
    aggregate node reports for a candidate without a result."""
    try:
        with (batch_dir(run_dir, k) / "fit.err").open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            tail = f.read()
    except OSError:
        tail = b""
    for cid in unfinished:
        (run_dir / "nodes" / cid / "fit.err").write_bytes(tail)


def _append(path: Path, line: str) -> None:
    # One write per line, flushed to disk: a crash leaves whole lines behind.
    with path.open("a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_outcomes(run_dir: Path, numbers: Iterable[int] | None = None) -> dict[str, Outcome]:
    """The latest outcome of every fitted candidate (a candidate fitted again has a later
    line), from the batches' outcomes.tsv."""
    found: dict[str, Outcome] = {}
    for k in batch_numbers(run_dir) if numbers is None else numbers:
        for fields in _tsv(batch_dir(run_dir, k) / "outcomes.tsv"):
            if len(fields) == 5 and SAFE_ID.fullmatch(fields[0]):
                cid, flag, cpu, finished, reason = fields
                found[cid] = Outcome(cid, flag, _number(cpu), _number(finished), reason, k)
    return found


def forget(run_dir: Path, ids: Iterable[str], by_batch: dict[str, int]) -> None:
    """Make candidates unfinished, so their batch (``by_batch``: candidate_batches) fits
    them again: their result and outcome go (their other outputs are replaced when the new
    fit comes back)."""
    chosen = set(ids)
    for k in {by_batch[cid] for cid in chosen}:
        path = batch_dir(run_dir, k) / "outcomes.tsv"
        kept = ["\t".join(f) + "\n" for f in _tsv(path) if f[0] not in chosen]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    for cid in chosen:
        result(run_dir, cid).unlink(missing_ok=True)


def _tsv(path: Path) -> Iterator[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        if line:
            yield line.split("\t")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def main(argv: list[str]) -> int:
    """``stage RUN K`` (PRE script) or ``collect RUN K CODE`` (POST script)."""
    try:
        if len(argv) == 2 and argv[0] == "stage":
            return 0 if stage(Path.cwd(), int(argv[1])) else SKIP
        if len(argv) == 3 and argv[0] == "collect":
            return collect(Path.cwd(), int(argv[1]), int(argv[2]))
    except BatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("usage: python -m lensjobs.workflow.batches stage K | collect K CODE", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
