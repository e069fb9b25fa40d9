"""``summary/index.html``: a self-contained gallery of the run that opens offline from
file:// (inline CSS, JavaScript and SVG; no network). One table row per candidate:
thumbnail (the colour cutout, the critical curve on a fit; a click opens the candidate's
summary or card), ID, status, flag, theta_E, chi^2, CPU time, reason, links to the fit's files
(``../nodes/<ID>/...``, ``../results/<ID>.tar.gz``). Columns sort on a click (numbers as
numbers); a text box and status/flag menus filter the rows. Every string is escaped."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from urllib.parse import quote

import numpy as np
from astropy.table import Table

from lensjobs.aggregate.collect import FLAGS, STATUSES, Entry, RunInfo, cpu_total
from lensjobs.aggregate.cutouts import thumb_name
from lensjobs.files import atomic_write

COLOURS = {
    "DONE": "#1565c0",
    "OK": "#2e7d32",
    "NOT_CONVERGED": "#f9a825",
    "POOR_FIT": "#ef6c00",
    "AT_BOUND": "#8d6e63",
    "NO_ARCS": "#607d8b",
    "FAILED": "#c62828",
    "MISSING": "#6a1b9a",
    "SKIPPED": "#9e9e9e",
}
OUTCOMES = (*FLAGS, "MISSING", "SKIPPED")  # one per candidate: its flag, else its status

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .4em}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:0 0 .8em}
dl.meta dt{font-weight:600}dl.meta dd{margin:0}
.figures{display:flex;flex-wrap:wrap;gap:2em;margin:.8em 0}
.figures svg text{font:12px system-ui,sans-serif}.figures svg text.t{font-weight:600}
.controls{position:sticky;top:0;background:#fff;padding:.5em 0;display:flex;gap:.8em;
align-items:center;border-bottom:1px solid #ccc}
.controls input{width:18em}
table{border-collapse:collapse;margin-top:.5em}
th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:middle}
th{background:#f4f4f4;white-space:nowrap}th[data-sort]{cursor:pointer}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td img{width:135px;height:135px;display:block;image-rendering:pixelated}
td.files a{margin-right:.5em}
.badge{color:#fff;border-radius:.3em;padding:.05em .4em;font-size:.9em;white-space:nowrap}
"""

SCRIPT = """
(() => {
  const table = document.getElementById("candidates");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const headers = Array.from(table.tHead.rows[0].cells);
  let current = {col: -1, asc: true};
  const value = (row, col) => row.cells[col].dataset.v ?? row.cells[col].textContent;
  const sortBy = (col) => {
    const asc = current.col === col ? !current.asc : true;
    current = {col, asc};
    const numeric = headers[col].dataset.sort === "num";
    rows.sort((a, b) => {
      const x = value(a, col), y = value(b, col);
      if (numeric) {
        const u = x === "" ? NaN : Number(x), w = y === "" ? NaN : Number(y);
        if (Number.isNaN(u) || Number.isNaN(w)) {
          return Number.isNaN(u) - Number.isNaN(w);  // blanks last either way
        }
        return asc ? u - w : w - u;
      }
      const order = x.localeCompare(y, undefined, {numeric: true});
      return asc ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
    headers.forEach((th) => th.removeAttribute("aria-sort"));
    headers[col].setAttribute("aria-sort", asc ? "ascending" : "descending");
  };
  headers.forEach((th, col) => {
    if (!th.dataset.sort) return;
    th.tabIndex = 0;
    th.addEventListener("click", () => sortBy(col));
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sortBy(col); });
  });
  const text = document.getElementById("filter");
  const status = document.getElementById("status-filter");
  const flag = document.getElementById("flag-filter");
  const shown = document.getElementById("shown");
  const apply = () => {
    const q = text.value.trim().toLowerCase();
    let n = 0;
    for (const row of rows) {
      const ok = (!q || row.dataset.search.includes(q))
        && (!status.value || row.dataset.status === status.value)
        && (!flag.value || row.dataset.flag === flag.value);
      row.hidden = !ok;
      n += ok;
    }
    shown.textContent = `${n} of ${rows.length} shown`;
  };
  text.addEventListener("input", apply);
  status.addEventListener("change", apply);
  flag.addEventListener("change", apply);
  apply();
})();
"""


def _bar_chart(title: str, bars: list[tuple[str, int, str]]) -> str:
    """A horizontal bar chart as inline SVG: (label, count, colour) per bar."""
    top = max((count for _, count, _ in bars), default=0) or 1
    height = 30 + 22 * len(bars)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text class="t" x="0" y="15">{escape(title)}</text>',
    ]
    for k, (label, count, colour) in enumerate(bars):
        y = 26 + 22 * k
        width = round(230 * count / top, 1)
        parts += [
            f'<text x="124" y="{y + 14}" text-anchor="end">{escape(label)}</text>',
            f'<rect x="130" y="{y + 2}" width="{width}" height="16" fill="{colour}"/>',
            f'<text x="{130 + width + 5}" y="{y + 14}">{count}</text>',
        ]
    return "\n".join([*parts, "</svg>"])


def _theta_histogram(entries: list[Entry]) -> str:
    values = np.array([e.estimate("THETA_E")[0] for e in entries if e.fitted])
    values = values[np.isfinite(values)]
    if not len(values):
        return _bar_chart("θE of the fits: none yet", [])
    counts, edges = np.histogram(values, bins=min(10, len(values)))
    bars = [
        (f"{lo:.2f} to {hi:.2f}″", int(c), "#1565c0")
        for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True)
    ]
    return _bar_chart(f"θE of the {len(values)} fits (arcsec)", bars)


def _number(value: float, fmt: str) -> tuple[str, str]:
    """(sort key, shown text) of a number; blank when it is NaN."""
    return ("", "—") if math.isnan(value) else (repr(value), format(value, fmt))


def _duration(seconds: float) -> str:
    """CPU time as people say it: 8.4 s, 3.2 min, 1.5 h."""
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _badge(word: str) -> str:
    if not word:
        return "—"
    return f'<span class="badge" style="background:{COLOURS[word]}">{escape(word)}</span>'


def _links(run: Path, cid: str) -> str:
    node = f"../nodes/{quote(cid)}"
    files = [
        ("model", f"nodes/{cid}/{cid}_model.png", f"{node}/{quote(cid)}_model.png"),
        ("corner", f"nodes/{cid}/{cid}_corner.png", f"{node}/{quote(cid)}_corner.png"),
        ("trace", f"nodes/{cid}/{cid}_trace.png", f"{node}/{quote(cid)}_trace.png"),
        ("params", f"nodes/{cid}/params.json", f"{node}/params.json"),
        ("txt", f"nodes/{cid}/{cid}.txt", f"{node}/{quote(cid)}.txt"),
        ("tar.gz", f"results/{cid}.tar.gz", f"../results/{quote(cid)}.tar.gz"),
    ]
    return " ".join(
        f'<a href="{escape(href)}">{label}</a>'
        for label, path, href in files
        if (run / path).exists()
    )


def _sky(inputs: Table) -> tuple[str, str] | None:
    """The catalogue's RA and Dec columns (any case), if it has both."""
    names = {c.upper(): c for c in inputs.colnames}
    return (names["RA"], names["DEC"]) if "RA" in names and "DEC" in names else None


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _inputs_text(inputs: Table, row: int) -> str:
    """Every input column's value of a row, for the filter box."""
    return " ".join(str(inputs[c][row]) for c in inputs.colnames)


def _row(run: Path, entry: Entry, inputs: Table) -> str:
    cid = escape(entry.id)
    png, small = f"{entry.id}.png", thumb_name(entry.id)
    what = "summary" if entry.fitted else "cutout, segmentation and reason"
    thumb = (
        f'<a href="{escape(quote(png))}"><img src="{escape(quote(small))}" '
        f'alt="{cid}: colour cutout; click for its {what}" loading="lazy"></a>'
        if (run / "summary" / small).exists()
        else ""
    )
    theta, err = entry.estimate("THETA_E")
    theta_key, theta_text = _number(theta, ".3f")
    if theta_key and not math.isnan(err):
        theta_text += f" ± {err:.3f}"
    chi2_key, chi2_text = _number(entry.number("reduced_chi2", "joint"), ".2f")
    cpu = entry.number("cpu_seconds")
    cpu_key, cpu_text = ("", "—") if math.isnan(cpu) else (repr(cpu), _duration(cpu))
    search = " ".join((entry.id, entry.status, entry.flag, entry.reason))
    search = f"{search} {_inputs_text(inputs, entry.row)}".lower()
    sky = ""
    if columns := _sky(inputs):
        for column in columns:
            key, text = _number(_float(inputs[column][entry.row]), ".5f")
            sky += f'<td class="n" data-v="{key}">{text}</td>'

    return (
        f'<tr data-status="{entry.status}" data-flag="{escape(entry.flag)}" '
        f'data-search="{escape(search)}">'
        f"<td>{thumb}</td><td>{cid}</td>"
        f'<td data-v="{entry.status}">{_badge(entry.status)}</td>'
        f'<td data-v="{escape(entry.flag)}">{_badge(entry.flag)}</td>'
        f'<td class="n" data-v="{theta_key}">{theta_text}</td>'
        f'<td class="n" data-v="{chi2_key}">{chi2_text}</td>'
        f'<td class="n" data-v="{cpu_key}">{cpu_text}</td>{sky}'
        f"<td>{escape(entry.reason)}</td>"
        f'<td class="files">{_links(run, entry.id)}</td></tr>'
    )


def _options(words: list[str], everything: str) -> str:
    options = [f'<option value="">{everything}</option>']
    options += [f'<option value="{escape(w)}">{escape(w)}</option>' for w in words]
    return "".join(options)


def gallery_html(
    run: Path, info: RunInfo, entries: list[Entry], downloads: list[str], inputs: Table
) -> str:
    """The page; ``downloads`` are file names in summary/ to link at the top, ``inputs`` the
    catalogue's table (its RA and Dec shown, every column searchable)."""
    by_status = {s: sum(e.status == s for e in entries) for s in STATUSES}
    by_outcome = {o: sum(e.outcome == o for e in entries) for o in OUTCOMES}
    cpu, n_cpu = cpu_total(entries)
    counts = ", ".join(f"{n} {s}" for s, n in by_status.items() if n)
    meta = [
        ("created", info.created or "—"),
        ("input", info.input_path or "—"),
        ("preset", info.preset or "—"),
        ("candidates", f"{len(entries)}: {counts}"),
        ("CPU time", f"{cpu / 3600:.2f} h in total over {n_cpu} fits"),
    ]
    flags = [f for f in FLAGS if any(e.flag == f for e in entries)]
    statuses = [s for s in STATUSES if by_status[s]]
    headers = [
        ("summary", ""),
        ("ID", "text"),
        ("status", "text"),
        ("flag", "text"),
        ("θE (″) ± error", "num"),
        ("χ²ν joint", "num"),
        ("CPU", "num"),
        *((("RA (°)", "num"), ("Dec (°)", "num")) if _sky(inputs) else ()),
        ("reason", "text"),
        ("files", ""),
    ]
    head = "".join(
        f'<th data-sort="{kind}">{escape(text)}</th>' if kind else f"<th>{escape(text)}</th>"
        for text, kind in headers
    )
    outcome_bars = [(o, n, COLOURS[o]) for o, n in by_outcome.items() if n]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<link rel="icon" href="data:,">',  # no favicon request, so no console error
            f"<title>lensjobs: {escape(info.name)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>lensjobs run {escape(info.name)}</h1>",
            '<dl class="meta">'
            + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in meta)
            + "</dl>",
            "<p>Downloads: "
            + " · ".join(f'<a href="{escape(quote(d))}">{escape(d)}</a>' for d in downloads)
            + "</p>",
            '<div class="figures">',
            _bar_chart("Candidates by outcome", outcome_bars),
            _theta_histogram(entries),
            "</div>",
            '<div class="controls">',
            '<input id="filter" type="search" placeholder="filter: ID, flag, reason, inputs" '
            'aria-label="filter rows">',
            '<select id="status-filter" aria-label="status">'
            + _options(statuses, "all statuses")
            + "</select>",
            '<select id="flag-filter" aria-label="flag">'
            + _options(flags, "all flags")
            + "</select>",
            '<span id="shown"></span></div>',
            f'<table id="candidates"><thead><tr>{head}</tr></thead><tbody>',
            *(_row(run, e, inputs) for e in entries),
            "</tbody></table>",
            f"<script>{SCRIPT}</script>",
            "</body></html>",
        ]
    )


def write_gallery(
    path: Path,
    run: Path,
    info: RunInfo,
    entries: list[Entry],
    downloads: list[str],
    inputs: Table,
) -> Path:
    html = gallery_html(run, info, entries, downloads, inputs)
    return atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
