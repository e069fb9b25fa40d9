"""Each bad catalogue gets one exact line, exit code 2 and no traceback from the real CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import noise_cube, notebook_layout, run_cli

from lensjobs.catalog import write_catalog


def ids(n: int) -> Table:
    return Table({"COADD_OBJECT_ID": np.arange(n, dtype=np.int64) + 1})


def assert_rejected(path: Path, message: str, hdu: str = "") -> None:
    """``lensjobs validate`` prints exactly ``error: PATH[HDU]: message`` and exits 2."""
    result = run_cli("validate", path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    where = f"{path}[{hdu}]" if hdu else str(path)
    assert result.stderr.strip().splitlines() == [f"error: {where}: {message}"]


def test_not_a_fits_file(tmp_path: Path) -> None:
    path = tmp_path / "candidates.fits"
    path.write_text("COADD_OBJECT_ID,RA,DEC\n1,2,3\n")
    assert_rejected(
        path,
        "not a FITS file (it does not start with a SIMPLE card); give a FITS candidate catalogue",
    )


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_fits(tmp_path: Path, keep: float) -> None:
    whole = write_catalog(tmp_path / "whole.fits", noise_cube(20), ids(20)).read_bytes()
    path = tmp_path / "cut.fits"
    path.write_bytes(whole[: int(len(whole) * keep)])
    assert_rejected(
        path, "truncated or damaged FITS file (its headers or data end early); copy it again"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.fits"
    assert_rejected(path, "no such file; give the path of a FITS candidate catalogue")


def test_no_4d_image_hdu(tmp_path: Path) -> None:
    path = tmp_path / "c.fits"
    cube = fits.ImageHDU(noise_cube(3)[:, 0])
    fits.HDUList([fits.PrimaryHDU(), cube, fits.BinTableHDU(ids(3))]).writeto(path)
    assert_rejected(
        path,
        "no 4-D image HDU (N, bands, H, W) found (HDU 1 is 3-D); store the cutouts as "
        "one cube, preferably in an extension named IMAGES",
    )


def test_named_images_of_wrong_dimension(tmp_path: Path) -> None:
    path = tmp_path / "c.fits"
    cube = fits.ImageHDU(noise_cube(3)[:, 0], name="IMAGES")
    fits.HDUList([fits.PrimaryHDU(), cube, fits.BinTableHDU(ids(3))]).writeto(path)
    assert_rejected(
        path,
        "image is 3-D (3x45x45), need 4-D (N, bands, H, W); store the cutouts as one cube",
        hdu="IMAGES",
    )


def test_fewer_than_three_bands(tmp_path: Path) -> None:
    path = notebook_layout(tmp_path / "c.fits", noise_cube(4, bands=2), ids(4))
    assert_rejected(
        path,
        "2 band(s), need at least 3 (g, r, i) along axis 1 of (N, bands, H, W)",
        hdu="HDU 1",
    )


def test_rows_do_not_match_cutouts(tmp_path: Path) -> None:
    path = notebook_layout(tmp_path / "c.fits", noise_cube(5), ids(4))
    assert_rejected(
        path, "HDU 2 has 4 rows but HDU 1 has 5 cutouts; rows and cutouts must match one to one"
    )


def test_no_table_hdu(tmp_path: Path) -> None:
    path = tmp_path / "c.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(noise_cube(2))]).writeto(path)
    assert_rejected(
        path,
        "no binary table HDU found; add a table (EXTNAME='CATALOG') with one row per "
        "cutout and a COADD_OBJECT_ID column",
    )


def test_no_id_column(tmp_path: Path) -> None:
    path = notebook_layout(tmp_path / "c.fits", noise_cube(3), Table({"RA": [1.0, 2.0, 3.0]}))
    assert_rejected(
        path,
        "no ID column; add COADD_OBJECT_ID (or Y6_COADD_OBJECT_ID) with "
        "one unique ID per candidate",
        hdu="HDU 2",
    )


def test_duplicate_ids(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "c.fits", noise_cube(4), Table({"COADD_OBJECT_ID": [5, 6, 7, 6]})
    )
    assert_rejected(
        path,
        "duplicate COADD_OBJECT_ID '6' in rows 1 and 3; IDs must be unique",
        hdu="CATALOG",
    )


@pytest.mark.parametrize("bad", ["../x", "two words", "", "a/b", "x" * 129])
def test_ids_unsafe_as_file_names(tmp_path: Path, bad: str) -> None:
    table = Table({"COADD_OBJECT_ID": ["ok_1", bad, "ok-3"]})
    path = write_catalog(tmp_path / "c.fits", noise_cube(3), table)
    assert_rejected(
        path,
        f"COADD_OBJECT_ID {bad!r} in row 1 is not safe as a file name; "
        "use 1-128 letters, digits, '_' or '-'",
        hdu="CATALOG",
    )


@pytest.mark.parametrize("pixscale", [0.0, -0.2637])
def test_non_positive_pixel_scale(tmp_path: Path, pixscale: float) -> None:
    path = write_catalog(tmp_path / "c.fits", noise_cube(2), ids(2), pixscale=pixscale)
    assert_rejected(
        path,
        f"PIXSCALE = {pixscale:g} is not positive; set it to the pixel "
        "scale in arcsec/pixel (DES: 0.2637)",
        hdu="IMAGES",
    )


def test_empty_catalogue(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "c.fits", noise_cube(0), ids(0))
    assert_rejected(path, "the catalogue is empty (0 candidates); nothing to do")


def test_bad_cutouts_are_reported_and_the_rest_kept(tmp_path: Path) -> None:
    images = noise_cube(4)
    images[0, 1, 10, 10] = np.nan
    images[2, 0, :, :5] = np.inf
    images[3, :3] = 0.0
    path = write_catalog(tmp_path / "c.fits", images, ids(4))
    result = run_cli("validate", path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "3 candidate(s) skipped:" in lines
    assert "row 0  1  1 NaN/Inf pixels" in lines
    assert "row 2  3  225 NaN/Inf pixels" in lines
    assert "row 3  4  cutout is all zero" in lines
    assert lines[-1] == "ok: 1 candidate(s) ready"


def test_all_cutouts_bad_is_fatal(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "c.fits", np.zeros((2, 3, 45, 45), np.float32), ids(2))
    result = run_cli("validate", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {path}: none of the 2 cutouts is usable; check the IMAGES data"
    )


@pytest.mark.parametrize(
    ("size", "pixscale"), [(64, 0.2637), (45, 0.168)], ids=["64x64", "0.168-arcsec"]
)
def test_cutouts_the_networks_were_not_trained_on(
    tmp_path: Path, size: int, pixscale: float
) -> None:
    """validate, submit and the infer node each answer in one line with exit 2: the networks
    know 45x45 px at 0.2637"/px (their model cards), and another grid would give priors in
    the wrong units or none at all."""
    path = write_catalog(tmp_path / "c.fits", noise_cube(3, size=size), ids(3), pixscale=pixscale)
    message = (
        f"cutouts are {size}x{size} px at {pixscale:g} arcsec/px, but the segmenter was "
        "trained on 45x45 px at 0.2637 arcsec/px; cut or resample the cutouts onto that "
        "grid and set PIXSCALE, then submit again"
    )
    assert_rejected(path, message, hdu="IMAGES")
    runs = tmp_path / "runs"
    for args in (
        ("submit", path, "--runs-dir", runs, "--dry-run", "--shared-fs"),
        ("node", "infer", path, "--out", tmp_path / "infer"),
    ):
        result = run_cli(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().splitlines() == [f"error: {path}[IMAGES]: {message}"]
    assert not runs.exists() and not (tmp_path / "infer").exists()  # nothing half-written


def test_a_pixel_scale_within_one_percent_is_accepted(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "c.fits", noise_cube(3), ids(3), pixscale=0.263)
    result = run_cli("validate", path)
    assert result.returncode == 0, result.stderr
    assert "pixel scale  0.263 arcsec/px" in result.stdout
    assert result.stderr.startswith("scanning cutouts: 3/3 (100 %)")  # a log line, not a bar
