"""The job images a run's infer and fit jobs start from, and where they come from.

Execute nodes share nothing with the access point, so jobs run from container images
(DESIGN.md). An image is named three ways, as HTCondor's ``container_image`` takes it:
a local ``.sif`` file (HTCondor transfers it with each job), an ``osdf:///`` URL (cached
near the execute nodes: the OSPool's way), or ``docker://`` (HTCondor converts it with
Apptainer). Where an image comes from, first found wins: ``--fit-image``/``--infer-image``,
the ``LENSJOBS_FIT_IMAGE``/``LENSJOBS_INFER_IMAGE`` variables, the user's config file, the
images ``make images`` built in this checkout."""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from lensjobs.files import sha256_of
from lensjobs.workflow.run import SUBMIT_SAFE, RunError

Kind = Literal["fit", "infer"]
KINDS: tuple[Kind, ...] = ("fit", "infer")
# Where `make images` puts them (containers/build-images.sh reads the same variable).
BUILT = Path(__file__).resolve().parents[2] / "images"
CONFIG_KEYS = ("fit_image", "infer_image", "osdf_dir", "project")
_URL = re.compile(rf"(osdf:///|docker://){SUBMIT_SAFE}")
_FILE_NAME = re.compile(SUBMIT_SAFE)


class Image(BaseModel, extra="forbid"):
    """One job image as run.json records it."""

    kind: Kind
    container_image: str  # what the submit file says
    source: str  # where the choice came from (option, variable, config file, make images)
    path: str | None = None  # the local file it is (or, with OSDF, the file to upload)
    sha256: str | None = None
    megabytes: int | None = None  # transferred into the sandbox: counted in request_disk


def recorded_images(info: dict) -> dict[str, Image] | None:
    """The images run.json records (None: jobs use the access point's Python)."""
    recorded = info.get("images")
    return {kind: Image(**image) for kind, image in recorded.items()} if recorded else None


def config_file() -> Path:
    """The user's lensjobs config file: $LENSJOBS_CONFIG, else the XDG place."""
    if os.environ.get("LENSJOBS_CONFIG"):
        return Path(os.environ["LENSJOBS_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "lensjobs" / "config.toml"


def read_config() -> dict[str, str]:
    """Submit defaults from the config file (absent: none). Keys: CONFIG_KEYS."""
    path = config_file()
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RunError(f"{path}: unreadable config file ({error}); fix or remove it") from None
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise RunError(f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(CONFIG_KEYS)}")
    wrong = [k for k, v in values.items() if not isinstance(v, str)]
    if wrong:
        raise RunError(f"{path}: {wrong[0]} must be a string in quotes")
    return values


def default_image(kind: Kind, config: dict[str, str]) -> tuple[str | None, str]:
    """The image to use when no option names one, and where that choice came from."""
    variable = f"LENSJOBS_{kind.upper()}_IMAGE"
    if os.environ.get(variable):
        return os.environ[variable], f"${variable}"
    if config.get(f"{kind}_image"):
        return config[f"{kind}_image"], str(config_file())
    built = Path(os.environ.get("LENSJOBS_IMAGE_DIR") or BUILT) / f"lensjobs-{kind}.sif"
    if built.exists():
        # The versioned file the link points to: its name changes with its contents.
        return str(built.resolve()), "make images"
    return None, ""


def resolve_image(kind: Kind, value: str, source: str, osdf_dir: str | None) -> Image:
    """Check an image reference; a local file's checksum and size are read here, and with
    OSDF it is named by its file name under the OSDF directory."""
    option = f"--{kind}-image"
    if "://" in value:
        if not _URL.fullmatch(value):
            raise RunError(
                f"{option} {value!r} ({source}): use a .sif file, osdf:///path or docker://name"
            )
        return Image(kind=kind, container_image=value, source=source)
    path = Path(value).expanduser().resolve()
    if path.suffix != ".sif" or not path.is_file():
        what = "no such file" if not path.exists() else "not a .sif file"
        raise RunError(
            f"{option} {value!r} ({source}): {what}; build the images with 'make images' "
            "in the lensjobs checkout, or name one (a .sif file, osdf:/// or docker://)"
        )
    if not _FILE_NAME.fullmatch(path.name):
        raise RunError(f"{option} {value!r}: rename the file without spaces, commas or quotes")
    reference = f"{osdf_dir}/{path.name}" if osdf_dir else str(path)
    return Image(
        kind=kind,
        container_image=reference,
        source=source,
        path=str(path),
        sha256=sha256_of(path),
        megabytes=-(-path.stat().st_size // 1_000_000),
    )


def choose_images(
    given: dict[Kind, str | None], osdf_dir: str | None, config: dict[str, str]
) -> dict[Kind, Image]:
    """The fit and infer images of a run that runs from images; one line if one is missing."""
    images = {}
    for kind in KINDS:
        value, source = (
            (given[kind], f"--{kind}-image") if given[kind] else default_image(kind, config)
        )
        if value is None:
            raise RunError(
                f"no {kind} image: build the images with 'make images' in the lensjobs "
                f"checkout, or name one with --{kind}-image or ${'LENSJOBS_' + kind.upper()}"
                f"_IMAGE (a .sif file, osdf:/// or docker://); --shared-fs runs jobs with "
                "this Python on a pool whose execute nodes share this filesystem"
            )
        images[kind] = resolve_image(kind, value, source, osdf_dir)
    return images


def osdf_local_path(url: str) -> Path:
    """Where an OSPool access point shows an osdf:///ospool/... object as a file."""
    return Path(url.removeprefix("osdf://"))


def osdf_area(osdf_dir: str) -> Path:
    """The OSDF directory as this access point shows it; one line if it cannot be seen."""
    area = osdf_local_path(osdf_dir)
    if not area.is_dir():
        raise RunError(
            f"--osdf-dir {osdf_dir}: {area} is not visible here, so nothing can be put on "
            "OSDF; submit from the access point whose OSDF area it is, or use --dry-run to "
            "see what to copy there"
        )
    return area


def osdf_uploads(info: dict, catalogue: Path) -> list[tuple[Path, str]]:
    """The files a run reads from OSDF, with their URLs: the catalogue, and images that
    were given as local files."""
    uploads = [(catalogue, info["input"]["osdf"])] if "osdf" in info["input"] else []
    for image in (recorded_images(info) or {}).values():
        if image.path and image.container_image.startswith("osdf://"):
            uploads.append((Path(image.path), image.container_image))
    return uploads


def put_on_osdf(uploads: list[tuple[Path, str]]) -> list[str]:
    """Copy files into the OSDF area; a file already there with the same size stays (names
    carry checksums). Returns the URLs written."""
    written = []
    for source, url in uploads:
        target = osdf_local_path(url)
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            continue
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(source, partial)
        partial.rename(target)
        written.append(url)
    return written
