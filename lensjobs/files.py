"""Atomic writes (a killed job never leaves a file that looks complete), checksums, and
manifests in sha256sum's format."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], Any], durable: bool = False) -> Path:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it into place; with
    ``durable`` the data and the rename reach the disk before this returns (for what a crash
    of the access point must not lose: not for the 100,000 fit inputs a split writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        tmp.chmod(0o644)
        if durable:
            fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync(path.parent)
    return path


def fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest(digests: Iterable[tuple[str, str]]) -> str:
    """(name, sha256) pairs in sha256sum's format: ``sha256sum -c MANIFEST`` checks them."""
    return "".join(f"{digest}  {name}\n" for name, digest in digests)


def read_manifest(path: Path) -> dict[str, str]:
    """A manifest back as {name: sha256}."""
    entries = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if digest and name:
            entries[name.strip()] = digest.strip()
    return entries


def write_tarball(path: Path, files: list[Path], mtime: int = 0) -> Path:
    """``files`` under one top folder named for the tarball, sorted by name, and a MANIFEST
    with their sha256; byte-identical for identical files."""
    top = path.name.removesuffix(".tar.gz")

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(f"{top}/{name}")
        info.size, info.mtime, info.mode = len(data), mtime, 0o644
        tar.addfile(info, io.BytesIO(data))

    def write(tmp: Path) -> None:
        with (
            open(tmp, "wb") as raw,
            # Level 1: the PNGs, most of the bytes, hardly compress at any level.
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            digests = []
            for f in sorted(files, key=lambda p: p.name):
                data = f.read_bytes()
                digests.append((f.name, hashlib.sha256(data).hexdigest()))
                add(tar, f.name, data)
            add(tar, "MANIFEST", manifest(digests).encode())

    return atomic_write(path, write)
