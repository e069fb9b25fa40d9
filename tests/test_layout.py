"""Data flows one way (DESIGN.md): the science never imports the workflow, and within the
workflow reading a DAG never depends on writing one."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lensjobs"
SCIENCE = ["catalog.py", "simulate.py", "labels.py", "frame.py", "display.py", "infer.py",
           "split.py", "train.py", "files.py", "ids.py", "models", "fit", "aggregate"]  # fmt: skip


def imported(path: Path) -> set[str]:
    """Every module a file imports, also inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def files(*names: str) -> list[Path]:
    """The Python files of the named modules and packages; each must exist, so a rename
    cannot quietly drop a module from the check."""
    found = []
    for name in names:
        path = PACKAGE / name
        assert path.exists(), f"lensjobs/{name} is gone; update the list"
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def test_the_science_never_imports_the_workflow() -> None:
    for path in files(*SCIENCE):
        workflow = {m for m in imported(path) if m.startswith("lensjobs.workflow")}
        assert not workflow, f"{path.relative_to(PACKAGE)} imports {sorted(workflow)}"


def test_reading_a_dag_does_not_depend_on_writing_one() -> None:
    read = imported(PACKAGE / "workflow" / "read.py")
    assert "lensjobs.workflow.write" not in read
    assert "lensjobs.workflow.status" not in read
    assert "lensjobs.workflow.read" in imported(PACKAGE / "workflow" / "write.py")


def test_the_dag_scripts_load_only_the_standard_library() -> None:
    """Each fit node's PRE and POST scripts run lensjobs.workflow.batches on the access
    point, thousands of times a run: nothing slow to import (astropy, pydantic, typer)."""
    for module in imported(PACKAGE / "workflow" / "batches.py"):
        top = module.split(".")[0]
        allowed = ("lensjobs.ids", "lensjobs.files", "__future__")
        assert top in sys.stdlib_module_names or module in allowed, module
    assert imported(PACKAGE / "ids.py") <= {"re"}
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in imported(PACKAGE / "files.py"))
