"""A run directory: its settings (run.json) and where each of its files lives.

``lensjobs submit`` makes one per submission (see DESIGN.md); every later command
(status, resubmit, pull, the local executor) finds its way around it through ``Run``."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lensjobs.files import atomic_write
from lensjobs.fit.presets import PRESETS, PUBLIC_PRESETS

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PROJECT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# No spaces, commas, quotes, semicolons or '=': such values go into submit files as they are.
SUBMIT_SAFE = r"[^\s,;\"'=]+"
_OSDF_DIR = re.compile(rf"osdf:///{SUBMIT_SAFE}")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


# A fit job's target length: OSPool and the HTCondor manual want minutes to hours per job
# (matchmaking, transfer and image start-up are paid per job), well inside "Medium" (10 h).
JOB_TARGET_S = 45 * 60


class RunError(Exception):
    """A run directory or a setting that cannot be used; the message is one line."""


def megabytes(value: Any) -> int:
    """HTCondor's way of writing sizes ('2GB', '1500MB', '2 G', a bare number = MB)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        amount, unit = float(value), ""
    else:
        match = _MEMORY.fullmatch(str(value).strip())
        if not match:
            raise ValueError(f"{value!r} is not a size; write it like 2GB or 1500MB")
        amount, unit = float(match[1]), match[2].upper()
    mb = round(amount * _MB_PER_UNIT[unit])
    if mb < 1:
        raise ValueError(f"{value!r} is less than 1 MB")
    return mb


Megabytes = Annotated[int, BeforeValidator(megabytes)]


def _matching(pattern: re.Pattern[str], message: str) -> AfterValidator:
    """A check that a string matches ``pattern``, failing with ``message`` (the fix)."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


RunName = Annotated[str, _matching(NAME_PATTERN, "use 1-64 letters, digits, '_' or '-'")]
ProjectName = Annotated[str, _matching(_PROJECT, "use 1-64 letters, digits, '_', '.' or '-'")]
OsdfDir = Annotated[
    str,
    BeforeValidator(lambda value: value.rstrip("/") if isinstance(value, str) else value),
    _matching(
        _OSDF_DIR, "not an OSDF directory; write it like osdf:///ospool/ap40/data/<user>/<dir>"
    ),
]


class RunSettings(BaseModel, extra="forbid"):
    """What a run asks of the pool. Memory and disk defaults are measured (BENCHMARKS.md)."""

    name: RunName
    preset: str = "standard"
    infer_gpus: Literal[0, 1] = 1
    infer_cpus: int = Field(default=2, ge=1)
    infer_memory: Megabytes = 4096
    # A fit job peaks at ~1 GB (JAX's compiled likelihood and its batches; BENCHMARKS.md).
    fit_memory: Megabytes = 2048
    fit_disk: Megabytes | None = None  # None: room for the batch (write.FIT_OUTPUT_MB)
    max_running_fits: int = Field(default=1000, ge=1)
    # None: chosen from the preset's measured cost so that a fit job runs ~45 min.
    fits_per_job: int | None = Field(default=None, ge=1)
    # An evicted job loses at most this much work (OUT/ is its checkpoint): a quarter of a
    # job. Each checkpoint also copies the job's finished outputs to the access point's
    # spool, so not after every fit (quadratic in the batch), and not more often.
    checkpoint_every: int = Field(default=900, ge=1)
    # Jobs run from the images in run.json unless the execute nodes share this filesystem
    # (and this Python): --shared-fs, or --local.
    shared_fs: bool = False
    infer_gpu_memory: Megabytes | None = None
    infer_gpu_capability: float | None = Field(default=None, ge=1.0, le=20.0)
    osdf_dir: OsdfDir | None = None
    project: ProjectName | None = None

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        testing = os.environ.get("LENSJOBS_TESTING") == "1"
        if preset not in PRESETS or (PRESETS[preset].testing_only and not testing):
            raise ValueError(f"unknown; choose one of {', '.join(PUBLIC_PRESETS)}")
        return preset

    @model_validator(mode="after")
    def _batch_size(self) -> RunSettings:
        if self.fits_per_job is None:
            cost = PRESETS[self.preset].mean_cpu_seconds
            self.fits_per_job = max(1, round(JOB_TARGET_S / cost))
        return self

    @model_validator(mode="after")
    def _gpu_needs_gpu(self) -> RunSettings:
        if self.infer_gpus == 0:
            for name in ("infer_gpu_memory", "infer_gpu_capability"):
                if getattr(self, name) is not None:
                    option = "--" + name.replace("_", "-")
                    raise ValueError(f"{option}: asks about a GPU; it needs --infer-gpus 1")
        return self


def settings_error(error: ValidationError) -> str:
    """pydantic's report as one line naming the option."""
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:  # a check of several settings together names them itself
        return message
    where = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
    return f"{where} {first.get('input')!r}: {message}"


def versions() -> dict[str, str]:
    """This Python's packages that matter to a run (torch and htcondor are extras)."""
    found = {"python": sys.version.split()[0]}
    for package in ("lensjobs", "lenstronomy", "torch", "htcondor"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


@dataclass(frozen=True)
class Run:
    """Paths inside one run directory (DESIGN.md's layout)."""

    dir: Path

    DAG = "lensjobs.dag"

    @functools.cached_property
    def name(self) -> str:
        """The run's name as submitted (the directory may have been moved or copied); read
        once, it never changes."""
        return self.read_info()["name"]

    @property
    def info_file(self) -> Path:
        return self.dir / "run.json"

    @property
    def candidates(self) -> Path:
        return self.dir / "candidates.fits"

    @property
    def dag(self) -> Path:
        return self.dir / self.DAG

    @property
    def status_file(self) -> Path:
        return self.dir / f"{self.DAG}.status"

    @property
    def nodes_log(self) -> Path:
        return self.dir / f"{self.DAG}.nodes.log"

    @property
    def priors(self) -> Path:
        return self.dir / "infer" / "priors.fits"

    @property
    def results(self) -> Path:
        return self.dir / "results"

    @property
    def summary(self) -> Path:
        return self.dir / "summary"

    def rescue_dags(self) -> list[Path]:
        """DAGMan's rescue DAGs, oldest first."""
        found = self.dir.glob(f"{self.DAG}.rescue[0-9][0-9][0-9]")
        return sorted(found, key=lambda p: int(p.name[-3:]))

    def read_info(self) -> dict[str, Any]:
        try:
            info = json.loads(self.info_file.read_text())
        except (FileNotFoundError, NotADirectoryError):
            what = "no run.json" if self.dir.is_dir() else "no such directory"
            raise RunError(
                f"{self.dir}: not a lensjobs run ({what}); give the directory "
                "'lensjobs submit' made"
            ) from None
        except (OSError, ValueError) as error:
            raise RunError(f"{self.info_file}: unreadable ({error})") from None
        # Its name becomes file and batch names: checked wherever it is read.
        name = info.get("name") if isinstance(info, dict) else None
        if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
            raise RunError(
                f"{self.info_file}: 'name' must be 1-64 letters, digits, '_' or '-' "
                f"(found {str(name)[:40]!r}); restore run.json as lensjobs submit wrote it"
            )
        return info

    def write_info(self, info: dict[str, Any]) -> None:
        text = json.dumps(info, indent=2) + "\n"
        atomic_write(self.info_file, lambda tmp: tmp.write_text(text), durable=True)


def open_run(path: Path) -> Run:
    run = Run(path.resolve())
    run.read_info()
    return run


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
