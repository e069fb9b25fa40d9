"""A picture of every candidate, from the catalogue: a thumbnail for the gallery (the gri
colour cutout, with the fitted critical curve where there is a fit) and, for candidates
without a fit summary (NO_ARCS, FAILED, MISSING, SKIPPED), a card in place of the summary:
the colour cutout, the segmentation map and the reason. Pillow only (a few ms each), the
same bytes when made again."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image, ImageDraw

from lensjobs.aggregate.collect import Entry
from lensjobs.aggregate.summary import font
from lensjobs.catalog import BANDS, open_catalog
from lensjobs.display import colour, lens_curves, sky_rms
from lensjobs.files import atomic_write
from lensjobs.frame import angle_to_pixel
from lensjobs.labels import ARCS, BACKGROUND, CLASS_NAMES, LENS_LIGHT, OTHER

THUMB_SCALE = 3  # thumbnail px per cutout px: 135 px for DES cutouts
CARD_SCALE = 6
LINE = 26  # px per line of a card's text
CURVE = (255, 210, 31)  # the critical curve, as in the fit's overview
SEGMENT_COLOURS = {
    ARCS: (30, 144, 255),
    LENS_LIGHT: (255, 165, 0),
    OTHER: (186, 85, 211),
    BACKGROUND: (25, 25, 25),
}


def thumb_name(cid: str) -> str:
    return f"{cid}_thumb.png"


def write_pictures(run: Path, entries: list[Entry]) -> list[Path]:
    """Every candidate's thumbnail, and a card (``<ID>.png``) for each one without a fit
    summary; returns the paths written, in catalogue order."""
    summary = run / "summary"
    written = []
    with open_catalog(run / "candidates.fits") as catalog:
        priors = _read_priors(run, catalog.ids)
        try:
            for start, block in catalog.iter_cutouts():
                classes = priors.classes(start, len(block)) if priors else None
                for k, cutout in enumerate(block):
                    entry = entries[start + k]
                    rgb = colour(cutout, _rms(priors, start + k, cutout))
                    curves = _critical_pixels(entry, catalog.num_pix, catalog.pixscale)
                    written.append(_thumbnail(summary / thumb_name(entry.id), rgb, curves))
                    if not entry.fitted:
                        seg = classes[k] if classes is not None else None
                        written.append(_card(summary / f"{entry.id}.png", entry, rgb, seg))
        finally:
            if priors:
                priors.hdul.close()
    return written


class _Priors:
    """priors.fits' background noise and segmentation, read a chunk at a time."""

    def __init__(self, hdul: fits.HDUList) -> None:
        self.hdul = hdul
        table = hdul["PRIORS"].data
        self.rms = np.stack([table[f"BKG_RMS_{b.upper()}"] for b in BANDS], axis=1)
        self.usable = np.asarray(table["USABLE"], bool)

    def classes(self, start: int, n: int) -> np.ndarray:
        """The most probable class per pixel; -1 everywhere for an unusable cutout."""
        probs = np.asarray(self.hdul["PROBS"].section[start : start + n])
        return np.where(self.usable[start : start + n, None, None], probs.argmax(axis=1), -1)


def _read_priors(run: Path, ids: list[str]) -> _Priors | None:
    """The run's priors when readable and for these candidates, else None: the pictures
    are then made without segmentation, from the cutouts' own noise."""
    try:
        hdul = fits.open(run / "infer" / "priors.fits", memmap=False)
    except OSError:
        return None
    try:
        rows = [str(v).strip() for v in hdul["PRIORS"].data["COADD_OBJECT_ID"]]
        if rows == ids and "PROBS" in hdul:
            return _Priors(hdul)
    except (OSError, KeyError, ValueError, TypeError):
        pass
    hdul.close()
    return None


def _rms(priors: _Priors | None, row: int, cutout: np.ndarray) -> np.ndarray:
    if priors and priors.usable[row] and np.all(priors.rms[row] > 0):
        return priors.rms[row]
    return sky_rms(cutout)


def _critical_pixels(entry: Entry, num_pix: int, pixscale: float) -> list[np.ndarray]:
    """The fitted critical curve in pixel coordinates (col, row), [] without a fit."""
    from lensjobs.fit.likelihood import NAMES
    from lensjobs.fit.model import to_kwargs

    if not entry.fitted:
        return []
    try:
        best = np.array([entry.params["parameters"][n]["median"] for n in NAMES], float)
    except (KeyError, TypeError):
        return []
    critical, _ = lens_curves(to_kwargs(best)["kwargs_lens"], num_pix * pixscale, pixscale)
    return [np.stack(angle_to_pixel(x, y, num_pix, pixscale), axis=1) for x, y in critical]


def _scaled(rgb: np.ndarray, scale: int) -> Image.Image:
    # Row 0 is the bottom of the sky (lenstronomy's frame): flipped for an image file.
    image = Image.fromarray(np.ascontiguousarray(rgb[::-1]))
    return image.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST)


def _save(path: Path, image: Image.Image) -> Path:
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=3))


def _thumbnail(path: Path, rgb: np.ndarray, curves: list[np.ndarray]) -> Path:
    image = _scaled(rgb, THUMB_SCALE)
    draw = ImageDraw.Draw(image)
    n = rgb.shape[0]
    for curve in curves:  # pixel centres at (k + 0.5) * scale; y flipped with the image
        points = [((c + 0.5) * THUMB_SCALE, (n - 0.5 - r) * THUMB_SCALE) for c, r in curve]
        draw.line(points, fill=CURVE, width=1)
    return _save(path, image)


def _card(path: Path, entry: Entry, rgb: np.ndarray, classes: np.ndarray | None) -> Path:
    """Colour cutout and segmentation map side by side; the outcome, the reason and the
    segmentation's legend below."""
    side = rgb.shape[0] * CARD_SCALE
    segmented = classes is not None and bool(np.all(classes >= 0))
    seg = np.full((*rgb.shape[:2], 3), 200, np.uint8)
    if segmented:
        for label, value in SEGMENT_COLOURS.items():
            seg[classes == label] = value
    lines = [f"{entry.id}: {entry.outcome}"]
    lines += textwrap.wrap(entry.reason or "no reason recorded", 60)
    if not segmented:
        lines.append("no segmentation: the networks did not see this cutout")
    face = font(18)
    card = Image.new("RGB", (2 * side + 30, side + 30 + LINE * (len(lines) + segmented)), "white")
    card.paste(_scaled(rgb, CARD_SCALE), (10, 10))
    card.paste(_scaled(seg, CARD_SCALE), (side + 20, 10))
    draw = ImageDraw.Draw(card)
    for k, line in enumerate(lines):
        draw.text((10, side + 20 + LINE * k), line, fill="black", font=face)
    if segmented:  # each class name beside a swatch of its colour
        x, y = 10.0, side + 20 + LINE * len(lines)
        for label, name in enumerate(CLASS_NAMES):
            swatch = (x, y + 3, x + 14, y + 17)
            draw.rectangle(swatch, fill=SEGMENT_COLOURS[label], outline="black")
            draw.text((x + 18, y), name, fill="black", font=face)
            x += 34 + draw.textlength(name, font=face)
    return _save(path, card)
