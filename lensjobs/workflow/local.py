"""``--local``: run a run's DAG on this machine, N nodes at a time, the way DAGMan and a
startd would: the same lensjobs.dag and submit files, node commands, dependency order,
RETRY ... UNLESS-EXIT, POST scripts, the FINAL node, the node status file and rescue DAGs.

Only the subset of the DAG and submit languages that ``lensjobs.workflow.write`` writes is
read."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO

from lensjobs.workflow.read import Dag, Node, NodeState, done_in_rescue, read_dag, read_submit
from lensjobs.workflow.run import Run, RunError
from lensjobs.workflow.write import write_rescue


def _job_environment(description: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    words = shlex.split(description.get("environment", "").strip('"'))
    env.update(w.split("=", 1) for w in words if "=" in w)
    return env


def _remaps(description: dict[str, str]) -> dict[str, str]:
    text = description.get("transfer_output_remaps", "").strip('"')
    pairs = (item.split("=", 1) for item in text.split(";") if "=" in item)
    return {a.strip(): b.strip() for a, b in pairs}


def _files(description: dict[str, str], key: str) -> list[str]:
    return [f.strip() for f in description.get(key, "").split(",") if f.strip()]


def run_job(run: Run, node: Node) -> int:
    """Run a node's job as a startd would; returns its exit code."""
    description = read_submit(run.dir / node.submit, node.vars)
    initialdir = run.dir / description.get("initialdir", ".")
    executable = Path(description["executable"])
    args = shlex.split(description.get("arguments", ""))
    env = _job_environment(description)
    with (
        (initialdir / description["output"]).open("w") as stdout,
        (initialdir / description["error"]).open("w") as stderr,
    ):
        if description.get("universe") == "local":
            return subprocess.call(
                [executable, *args], cwd=initialdir, env=env, stdout=stdout, stderr=stderr
            )
        return _run_in_sandbox(description, initialdir, executable, args, env, stdout, stderr)


def _run_in_sandbox(
    description: dict[str, str],
    initialdir: Path,
    executable: Path,
    args: list[str],
    env: dict[str, str],
    stdout: IO[str],
    stderr: IO[str],
) -> int:
    """A vanilla-universe job: inputs copied into a fresh sandbox, restarted there on the
    checkpoint exit code, then new or changed files brought back (with remaps)."""
    sandbox = Path(tempfile.mkdtemp(prefix="lensjobs-sandbox-"))
    try:
        for name in [str(executable), *_files(description, "transfer_input_files")]:
            _transfer(initialdir / name, sandbox)
        started = time.time()
        inputs = {p.name for p in sandbox.iterdir()}
        command = [sandbox / executable.name, *args]
        while True:
            code = subprocess.call(command, cwd=sandbox, env=env, stdout=stdout, stderr=stderr)
            if code != int(description.get("checkpoint_exit_code", -1)):
                break
        wanted = _files(description, "transfer_output_files")
        remaps = _remaps(description)
        for path in sandbox.iterdir():
            changed = path.name not in inputs or path.stat().st_mtime > started
            if path.name in wanted if wanted else path.is_file() and changed:
                _transfer(path, Path(remaps.get(path.name, initialdir)), move=True)
        return code
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def _transfer(source: Path, target: Path, move: bool = False) -> None:
    """A file, or a directory with its contents (merged into one of the same name), into
    the folder ``target`` (or to the file ``target`` a remap names), as HTCondor does."""
    if source.is_dir():
        shutil.copytree(source, target / source.name, dirs_exist_ok=True)
        if move:
            shutil.rmtree(source)
        return
    destination = target / source.name if target.is_dir() else target
    destination.parent.mkdir(parents=True, exist_ok=True)
    (shutil.move if move else shutil.copy2)(source, destination)


def status_text(dag: Dag, dag_state: NodeState) -> str:
    """The node status file, in DAGMan's format (NODE_STATUS_FILE), so one reader serves both."""
    stamp = int(time.time())
    nodes = list(dag.nodes.values())

    def count(*states: NodeState) -> int:
        return sum(n.state in states for n in nodes)

    ads = [
        "[",
        '  Type = "DagStatus";',
        f"  Timestamp = {stamp};",
        f'  DagStatus = {dag_state}; /* "STATUS_{dag_state.name}" */',
        f"  NodesTotal = {len(nodes)};",
        f"  NodesDone = {count(NodeState.DONE)};",
        "  NodesPre = 0;",
        f"  NodesQueued = {count(NodeState.SUBMITTED)};",
        f"  NodesPost = {count(NodeState.POSTRUN)};",
        f"  NodesReady = {count(NodeState.READY)};",
        f"  NodesUnready = {count(NodeState.NOT_READY)};",
        f"  NodesFutile = {count(NodeState.FUTILE)};",
        f"  NodesFailed = {count(NodeState.ERROR)};",
        "  JobProcsHeld = 0;",
        f"  JobProcsIdle = {count(NodeState.READY)};",
        "]",
    ]
    for n in nodes:
        details = n.details.replace("\\", "\\\\").replace('"', '\\"')
        ads += [
            "[",
            '  Type = "NodeStatus";',
            f'  Node = "{n.name}";',
            f'  NodeStatus = {n.state}; /* "STATUS_{n.state.name}" */',
            f'  StatusDetails = "{details}";',
            f"  RetryCount = {n.retries};",
            f"  JobProcsQueued = {int(n.state == NodeState.SUBMITTED)};",
            "  JobProcsHeld = 0;",
            "]",
        ]
    ads += ["[", '  Type = "StatusEnd";', f"  EndTime = {stamp};", "]"]
    return "\n".join(ads) + "\n"


def lock_file(run: Run) -> Path:
    return run.dir / f"{Run.DAG}.lock"  # DAGMan's name for it, too


def running_here(run: Run) -> bool:
    """Whether a local executor is running this DAG (its lock names a live process)."""
    try:
        os.kill(int(lock_file(run).read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def acquire_lock(run: Run) -> Path:
    """The run's lock, taken exclusively (created, never overwritten): a second executor of
    the same DAG is refused in one line; a lock left by a process that died is taken over."""
    lock = lock_file(run)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if running_here(run):
                raise RunError(
                    f"{run.dir}: another lensjobs runs this DAG here (pid "
                    f"{lock.read_text().split()[0]}); wait for it or stop it first"
                ) from None
            lock.unlink(missing_ok=True)  # its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return lock
    raise RunError(f"{lock}: cannot take the run's lock; remove it if no lensjobs runs this DAG")


class LocalDag:
    """Runs the DAG with ``workers`` jobs at a time; ``report`` hears of every state change."""

    def __init__(self, run: Run, workers: int, report: Callable[[Dag], None] | None = None):
        self.run = run
        self.workers = workers
        self.report = report or (lambda dag: None)
        self.dag = read_dag(run.dag)
        self._status_written = 0.0
        self._lock = threading.Lock()
        for name in done_in_rescue(run):
            self.dag.nodes[name].state = NodeState.DONE

    def execute(self) -> bool:
        """Run every node that is not DONE; True when the DAG succeeded."""
        lock = acquire_lock(self.run)
        try:
            regular = [n for n in self.dag.nodes.values() if not n.final]
            with ThreadPoolExecutor(self.workers) as pool:
                self._run_nodes(pool, regular)
                failed_count = sum(n.state == NodeState.ERROR for n in regular)
                for final in (n for n in self.dag.nodes.values() if n.final):
                    self._set(final, NodeState.SUBMITTED)
                    attempt = pool.submit(self._attempt, final, failed_count)
                    self._finish(final, attempt.result())
            ok = all(n.state == NodeState.DONE for n in self.dag.nodes.values())
            if not ok:
                nodes = self.dag.nodes.values()
                failed = [n.name for n in nodes if n.state == NodeState.ERROR]
                done = [n.name for n in nodes if n.state == NodeState.DONE and not n.final]
                write_rescue(
                    self.run, done, [f"Written by lensjobs --local; failed: {', '.join(failed)}"]
                )
            self._write_status(NodeState.DONE if ok else NodeState.ERROR, force=True)
            return ok
        finally:
            lock.unlink(missing_ok=True)

    def _run_nodes(self, pool: ThreadPoolExecutor, nodes: list[Node]) -> None:
        running: dict[Future, Node] = {}
        while True:
            for node in nodes:
                self._update_readiness(node)
            for node in nodes:
                if node.state == NodeState.READY and self._has_room(running.values(), node):
                    self._set(node, NodeState.SUBMITTED)
                    running[pool.submit(self._attempt, node, 0)] = node
            self._write_status(NodeState.SUBMITTED)
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                self._finish(running.pop(future), future.result())

    def _update_readiness(self, node: Node) -> None:
        if node.state != NodeState.NOT_READY:
            return
        parents = [self.dag.nodes[p].state for p in node.parents]
        if any(s in (NodeState.ERROR, NodeState.FUTILE) for s in parents):
            self._set(node, NodeState.FUTILE)
        elif all(s == NodeState.DONE for s in parents):
            self._set(node, NodeState.READY)

    def _has_room(self, running: Iterable[Node], node: Node) -> bool:
        running = list(running)
        if len(running) >= self.workers:
            return False
        cap = self.dag.maxjobs.get(node.category or "")
        return cap is None or sum(n.category == node.category for n in running) < cap

    def _attempt(self, node: Node, failed_count: int) -> tuple[str, int]:
        """One try of a node: its PRE script, its job, then its POST script. Returns (what
        failed, code); a PRE script's PRE_SKIP code means done without the job."""
        if node.pre:
            code = self._script(node, "pre", {})
            if code == node.pre_skip:
                return ("PRE script", 0)
            if code:
                return ("PRE script", code)
        code = run_job(self.run, node)
        if not node.post:
            return ("Job", code)
        self._set(node, NodeState.POSTRUN)
        post = self._script(node, "post", {"$RETURN": code, "$FAILED_COUNT": failed_count})
        return ("POST script", post) if post else ("Job", 0)

    def _script(self, node: Node, kind: str, macros: dict[str, int]) -> int:
        """A PRE or POST script, in the run directory as DAGMan runs them."""
        words = getattr(node, kind)
        for macro, value in macros.items():
            words = [w.replace(macro, str(value)) for w in words]
        with (self.run.dir / f"{node.name}.{kind}.err").open("w") as stderr:
            return subprocess.call(words, cwd=self.run.dir, stdout=stderr, stderr=stderr)

    def _finish(self, node: Node, outcome: tuple[str, int]) -> None:
        what, code = outcome
        if code == 0:
            self._set(node, NodeState.DONE, "")
            return
        details = f"{what} failed with status {code}"
        if node.retries < node.retry and code != node.unless_exit:
            node.retries += 1
            self._set(node, NodeState.READY, details)
        else:
            self._set(node, NodeState.ERROR, details)

    def _set(self, node: Node, state: NodeState, details: str | None = None) -> None:
        with self._lock:
            node.state = state
            if details is not None:
                node.details = details
        self.report(self.dag)

    def _write_status(self, dag_state: NodeState, force: bool = False) -> None:
        # Like DAGMan, at most every few seconds: rewriting it per change is O(nodes^2).
        if not force and time.time() - self._status_written < 2:
            return
        text = status_text(self.dag, dag_state)
        tmp = self.run.status_file.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.run.status_file)
        self._status_written = time.time()
