from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import noise_cube, notebook_layout

from lensjobs.catalog import DEFAULT_FWHM, CatalogError, open_catalog, write_catalog


def test_notebook_layout_loads_g_r_i_of_four_bands(tmp_path: Path) -> None:
    images = noise_cube(6)
    table = Table(
        {
            "COADD_OBJECT_ID": np.arange(6, dtype=np.int64) + 1000,
            "TILENAME": ["DES0000-0000"] * 6,
            "MAG_AUTO_G": np.linspace(20, 21, 6),
        }
    )
    path = notebook_layout(tmp_path / "nb.fits", images, table)
    with open_catalog(path) as cat:
        assert cat.n == 6
        assert cat.ids[0] == "1000"
        assert cat.num_pix == 45
        assert (cat.image_hdu, cat.table_hdu) == ("HDU 1", "HDU 2")
        assert cat.pixscale == pytest.approx(0.2637)
        assert cat.magzero == 30
        assert "defaults" in cat.fwhm_source
        assert cat.fwhm[0].tolist() == [DEFAULT_FWHM[b] for b in "gri"]
        cutouts = cat.cutouts(0, 6)
        assert cutouts.dtype == np.float32
        np.testing.assert_array_equal(cutouts, images[:, :3])
        assert "MAG_AUTO_G" in cat.table.colnames


def test_preferred_layout_reorders_bands_and_reads_psf_columns(tmp_path: Path) -> None:
    images = noise_cube(4)
    fwhm = {
        "FWHM_WMEAN_G": [1.1, np.nan, 1.2, 1.3],
        "FWHM_WMEAN_R": [0.9] * 4,
        "FWHM_WMEAN_I": [0.8, 0.7, -1.0, 0.75],
    }
    table = Table({"y6_coadd_object_id": ["a", "b", "c", "d"], **fwhm})
    path = write_catalog(
        tmp_path / "c.fits", images, table, bands=("z", "i", "r", "g"), pixscale=0.2
    )
    with open_catalog(path) as cat:
        assert cat.id_column == "y6_coadd_object_id"
        assert cat.pixscale == 0.2
        np.testing.assert_array_equal(cat.cutouts(1, 3), images[1:3, [3, 2, 1]])
        assert cat.fwhm[0].tolist() == [1.1, 0.9, 0.8]
        # Missing or non-positive values fall back to the defaults, and the summary says so.
        assert cat.fwhm[1].tolist() == [DEFAULT_FWHM["g"], 0.9, 0.7]
        assert cat.fwhm[2].tolist() == [1.2, 0.9, DEFAULT_FWHM["i"]]
        assert cat.fwhm_source.startswith("catalogue columns FWHM_WMEAN_G/R/I (2 missing")


def test_scan_flags_bad_cutouts_and_keeps_the_rest(tmp_path: Path) -> None:
    images = noise_cube(6)
    images[1, 0, 3, 3] = np.nan
    images[2, 2, 0, 0] = np.inf
    images[3, :3] = 0.0
    images[4, 1] = 0.0
    images[5, 0] = 0.0
    images[5, 2] = 7.5  # a sky level without any object: as useless as zeros
    images[0, 3] = np.nan  # the z band is ignored
    ids = Table({"COADD_OBJECT_ID": list("uvwxyz")})
    path = write_catalog(tmp_path / "c.fits", images, ids)
    with open_catalog(path) as cat:
        problems = cat.scan(chunk=2)
    assert [(p.row, p.id, p.reason) for p in problems] == [
        (1, "v", "1 NaN/Inf pixels"),
        (2, "w", "1 NaN/Inf pixels"),
        (3, "x", "cutout is all zero"),
        (4, "y", "band r all zero"),
        (5, "z", "band g all zero, band i constant (7.5)"),
    ]


def test_streaming_reads_a_large_file_a_chunk_at_a_time(tmp_path: Path) -> None:
    n = 3000  # 97 MB of cutouts on disk
    path = tmp_path / "big.fits"
    write_catalog(path, noise_cube(n, seed=1), Table({"COADD_OBJECT_ID": np.arange(n)}))
    cube_bytes = n * 4 * 45 * 45 * 4
    with open_catalog(path) as cat:
        tracemalloc.start()
        total = 0.0
        for _, block in cat.iter_cutouts(chunk=200):
            total += float(block[:, 1].sum())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        problems = cat.scan(chunk=200)
    assert problems == []
    assert np.isfinite(total)
    assert peak < cube_bytes / 5, f"peak {peak / 1e6:.0f} MB for a {cube_bytes / 1e6:.0f} MB cube"


def test_write_catalog_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out" / "c.fits"
    images = noise_cube(3, bands=3)
    write_catalog(path, images, Table({"COADD_OBJECT_ID": ["p", "q", "r"], "RA": [1.0, 2.0, 3.0]}))
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.fits"]
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGES", "CATALOG"]
        assert hdul["IMAGES"].header["BANDS"] == "g,r,i"
    with open_catalog(path) as cat:
        np.testing.assert_array_equal(cat.cutouts(0, 3), images)
        assert list(cat.table["RA"]) == [1.0, 2.0, 3.0]


def test_integer_like_float_pixscale_string_is_rejected(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "c.fits", noise_cube(2), Table({"COADD_OBJECT_ID": [1, 2]}))
    with fits.open(path, mode="update") as hdul:
        hdul["IMAGES"].header["PIXSCALE"] = "fast"
    with pytest.raises(CatalogError, match=r"PIXSCALE = 'fast' is not a number"):
        open_catalog(path)
