"""The HTML gallery in a real browser: Debian's chromium, headless, driven by selenium from
file:// (offline, as a user opens it from a run directory)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import run_cli
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_aggregate import FITS, make_run

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = Path("/tmp/lensjobs_gallery.png")
COLUMNS = {"ID": 1, "status": 2, "flag": 3, "theta": 4, "chi2": 5, "cpu": 6, "ra": 7, "dec": 8}

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (make test installs them)",
)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so selenium never looks for (or downloads) one.
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser.get((make_run(tmp_path_factory) / "summary" / "index.html").as_uri())
    yield browser
    browser.quit()


def _rows(driver: webdriver.Chrome) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#candidates tbody tr")


def _visible_ids(driver: webdriver.Chrome) -> list[str]:
    return [r.find_elements(By.TAG_NAME, "td")[1].text for r in _rows(driver) if r.is_displayed()]


def _column(driver: webdriver.Chrome, col: int) -> list[str]:
    return [r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-v") for r in _rows(driver)]


def _click_header(driver: webdriver.Chrome, col: int) -> None:
    driver.find_elements(By.CSS_SELECTOR, "#candidates thead th")[col].click()


def _severe(driver: webdriver.Chrome) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_page_loads_offline_without_console_errors(driver: webdriver.Chrome) -> None:
    assert driver.title == "lensjobs: agg-test"
    assert len(_rows(driver)) == 8
    assert driver.find_element(By.ID, "shown").text == "8 of 8 shown"
    figures = driver.find_elements(By.CSS_SELECTOR, ".figures svg")
    assert len(figures) == 2 and "outcome" in figures[0].get_attribute("aria-label")
    assert "1 SKIPPED" in driver.find_element(By.CSS_SELECTOR, "dl.meta").text
    assert _severe(driver) == []


def test_every_thumbnail_loads(driver: webdriver.Chrome) -> None:
    images = driver.find_elements(By.CSS_SELECTOR, "#candidates img")
    assert len(images) == 8  # every candidate has one, fitted or not
    for image in images:
        driver.execute_script("arguments[0].scrollIntoView()", image)  # they load lazily
        WebDriverWait(driver, 10).until(lambda d, i=image: d.execute_script(
            "return arguments[0].complete", i
        ))  # fmt: skip
        assert driver.execute_script("return arguments[0].naturalWidth", image) > 0
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SCREENSHOT))
    assert _severe(driver) == []


def test_links_point_into_the_run(driver: webdriver.Chrome) -> None:
    row = _rows(driver)[FITS[0]]
    hrefs = [a.get_attribute("href") for a in row.find_elements(By.CSS_SELECTOR, "td.files a")]
    cid = row.find_elements(By.TAG_NAME, "td")[1].text
    assert [h.rsplit("/", 2)[-2:] for h in hrefs] == [
        [cid, f"{cid}_model.png"],
        [cid, f"{cid}_corner.png"],
        [cid, f"{cid}_trace.png"],
        [cid, "params.json"],
        [cid, f"{cid}.txt"],
        ["results", f"{cid}.tar.gz"],
    ]
    for href in hrefs:
        assert Path(href.removeprefix("file://")).is_file()


def test_clicking_a_header_sorts(driver: webdriver.Chrome) -> None:
    col = COLUMNS["theta"]
    _click_header(driver, col)
    keys = _column(driver, col)
    numbers = [float(k) for k in keys if k]
    assert numbers == sorted(numbers) and len(numbers) == len(FITS)
    assert keys[len(numbers) :] == [""] * (8 - len(numbers))  # no value: last
    _click_header(driver, col)
    keys = _column(driver, col)
    assert [float(k) for k in keys if k] == sorted(numbers, reverse=True)
    assert keys[len(numbers) :] == [""] * (8 - len(numbers))  # last either way
    header = driver.find_elements(By.CSS_SELECTOR, "#candidates thead th")[col]
    assert header.get_attribute("aria-sort") == "descending"

    col = COLUMNS["status"]
    _click_header(driver, col)
    statuses = _column(driver, col)
    assert statuses == sorted(statuses)
    col = COLUMNS["cpu"]
    _click_header(driver, col)
    cpu = [float(k) if k else math.inf for k in _column(driver, col)]
    assert cpu == sorted(cpu)
    assert _severe(driver) == []


def test_filter_box_hides_rows_that_do_not_match(driver: webdriver.Chrome) -> None:
    box = driver.find_element(By.ID, "filter")

    def type_in(text: str) -> None:
        # Typing fires input events (WebElement.clear() does not); the modifier is
        # released at the end of each send_keys.
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE, text)

    ids = sorted(_visible_ids(driver))
    type_in(ids[2])
    assert _visible_ids(driver) == [ids[2]]
    assert driver.find_element(By.ID, "shown").text == "1 of 8 shown"
    type_in("nan/inf")  # the reason of the unusable cutout, in another case
    assert len(_visible_ids(driver)) == 1
    type_in("no such thing")
    assert _visible_ids(driver) == []
    type_in("")
    assert sorted(_visible_ids(driver)) == ids


def test_sky_position_sorts_and_input_columns_filter(driver: webdriver.Chrome) -> None:
    headers = driver.find_elements(By.CSS_SELECTOR, "#candidates thead th")
    assert [headers[COLUMNS[c]].text for c in ("ra", "dec")] == ["RA (°)", "Dec (°)"]
    _click_header(driver, COLUMNS["ra"])
    ra = [float(k) for k in _column(driver, COLUMNS["ra"])]
    assert len(ra) == 8 and ra == sorted(ra)
    box = driver.find_element(By.ID, "filter")
    wanted = _visible_ids(driver)[3]
    box.send_keys(repr(ra[3])[:8])  # an input column's value, as the catalogue has it
    assert _visible_ids(driver) == [wanted]
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    assert len(_visible_ids(driver)) == 8
    assert _severe(driver) == []


def test_status_and_flag_filters(driver: webdriver.Chrome) -> None:
    flag = Select(driver.find_element(By.ID, "flag-filter"))
    flag.select_by_value("NO_ARCS")
    visible = [r for r in _rows(driver) if r.is_displayed()]
    assert len(visible) == 1 and visible[0].get_attribute("data-flag") == "NO_ARCS"
    flag.select_by_value("")
    status = Select(driver.find_element(By.ID, "status-filter"))
    status.select_by_value("DONE")
    visible = [r for r in _rows(driver) if r.is_displayed()]
    assert len(visible) == len(FITS) + 1  # the fits and NO_ARCS
    assert {r.get_attribute("data-status") for r in visible} == {"DONE"}
    flag.select_by_value("FAILED")  # both filters at once: nothing is DONE and FAILED
    assert not any(r.is_displayed() for r in _rows(driver))
    status.select_by_value("")
    flag.select_by_value("")
    assert all(r.is_displayed() for r in _rows(driver))
    assert _severe(driver) == []


def test_every_link_and_image_of_a_pulled_gallery_loads(
    driver: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`lensjobs pull` makes a tree in which the gallery works as in the run directory."""
    got = tmp_path_factory.mktemp("pulled")
    pulled = run_cli("pull", make_run(tmp_path_factory), "--to", got)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    driver.get((got / "lensjobs_agg-test_results" / "index.html").as_uri())
    try:
        images = driver.find_elements(By.CSS_SELECTOR, "img")
        assert images
        for image in images:
            driver.execute_script("arguments[0].scrollIntoView()", image)  # lazy loading
            WebDriverWait(driver, 10).until(lambda d, i=image: d.execute_script(
                "return arguments[0].complete", i
            ))  # fmt: skip
            assert driver.execute_script("return arguments[0].naturalWidth", image) > 0
        hrefs = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a")]
        files = [h for h in hrefs if h.startswith("file://")]
        assert len(files) > 2 * len(FITS)
        broken = [h for h in files if not Path(unquote(h.removeprefix("file://"))).is_file()]
        assert broken == []
        assert _severe(driver) == []
    finally:
        driver.get((make_run(tmp_path_factory) / "summary" / "index.html").as_uri())
