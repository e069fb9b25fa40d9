"""Per-candidate summary PNGs: the fit's colour overview on top (data with the critical
curve, model, data minus lens light, normalised residuals, the source with the caustic),
below it the corner plot of the physical lens parameters and a text box (ID, theta_E with
its total error and that error's statistical and systematic parts, joint reduced chi^2,
flag). Composed with Pillow from the fit's own PNGs (no re-fit, no re-plot: ~0.2 s each),
in parallel. A PNG is rebuilt only when missing or older than its inputs; the bytes are the
same either way (no timestamps, no software tag)."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

from lensjobs.aggregate.collect import Entry
from lensjobs.files import atomic_write

WIDTH = 1500  # px of the overview, the summary's width
CORNER = 820  # px of the corner plot's side
FONT_SIZE = 28
MARGIN = 14
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@dataclass(frozen=True)
class SummaryTask:
    """Everything one summary PNG is made of (plain data: it goes to a worker process)."""

    out: Path
    overview: Path
    corner: Path
    params: Path
    lines: tuple[str, ...]

    def stale(self) -> bool:
        try:
            built = self.out.stat().st_mtime_ns
        except FileNotFoundError:
            return True
        inputs = (self.overview, self.corner, self.params)
        return any(p.exists() and p.stat().st_mtime_ns > built for p in inputs)


def summary_task(run: Path, entry: Entry) -> SummaryTask:
    node = run / "nodes" / entry.id
    theta, err = entry.estimate("THETA_E")
    stat, sys_ = entry.error_parts("THETA_E")
    chi2 = entry.number("reduced_chi2", "joint")
    return SummaryTask(
        out=run / "summary" / f"{entry.id}.png",
        overview=node / f"{entry.id}_overview.png",
        corner=node / f"{entry.id}_physical.png",
        params=node / "params.json",
        lines=(
            entry.id,
            f"θE = {theta:.3f} ± {err:.3f}″",
            f"(stat {stat:.3f}, sys {sys_:.3f})",
            f"χ²ν (joint) = {chi2:.2f}",
            f"flag: {entry.flag}",
        ),
    )


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT), size)


def _panel(path: Path, label: str, size: tuple[int, int], by_width: bool) -> Image.Image:
    """The image scaled to ``size``'s width (or height), or a grey box saying why there is
    none."""
    try:
        with Image.open(path) as image:
            if by_width:
                scaled_size = (size[0], max(1, round(image.height * size[0] / image.width)))
            else:
                scaled_size = (max(1, round(image.width * size[1] / image.height)), size[1])
            # reducing_gap: a fast integer reduction first; converted after scaling, where it
            # is cheap.
            scaled = image.resize(scaled_size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        return scaled.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        why = "missing" if isinstance(err, FileNotFoundError) else "unreadable"
        panel = Image.new("RGB", size, (225, 225, 225))
        ImageDraw.Draw(panel).text(
            (size[0] // 2, size[1] // 2), f"{label} {why}", fill="black", font=font(30),
            anchor="mm",
        )  # fmt: skip
        return panel


def render(task: SummaryTask) -> Path:
    overview = _panel(task.overview, "overview PNG", (WIDTH, WIDTH * 36 // 165), by_width=True)
    corner = _panel(task.corner, "corner PNG", (CORNER, CORNER), by_width=False)
    canvas = Image.new("RGB", (WIDTH, overview.height + corner.height), "white")
    canvas.paste(overview, (0, 0))
    canvas.paste(corner, (0, overview.height))
    draw = ImageDraw.Draw(canvas)
    text = "\n".join(task.lines)
    face = font(FONT_SIZE)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=face, spacing=10)
    # Beside the corner plot, level with its top.
    x, y = corner.width + 3 * MARGIN, overview.height + 3 * MARGIN
    box = (x, y, x + (right - left) + 2 * MARGIN, y + (bottom - top) + 2 * MARGIN)
    draw.rounded_rectangle(box, radius=10, fill=(255, 255, 240), outline="black", width=2)
    draw.multiline_text(
        (x + MARGIN - left, y + MARGIN - top), text, fill="black", font=face, spacing=10
    )
    # Level 3: faster than the default 6 and, for these figures, smaller too.
    return atomic_write(task.out, lambda tmp: canvas.save(tmp, format="PNG", compress_level=3))


def build_pngs(
    tasks: list[SummaryTask], workers: int, progress: Callable[[int], None] | None = None
) -> int:
    """Render the stale summary PNGs, ``workers`` at a time; returns how many were built."""
    todo = [t for t in tasks if t.stale()]
    if progress:
        progress(len(tasks) - len(todo))
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(todo) > 1:
            # spawn: the workers inherit no threads (a progress bar's), and unlike forkserver
            # it needs no socket in $TMPDIR, whose path can be too long for one.
            context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(context.Pool(min(workers, len(todo))))
            done = pool.imap_unordered(render, todo, chunksize=max(1, len(todo) // (8 * workers)))
        else:
            done = map(render, todo)
        for _ in done:
            if progress:
                progress(1)
    return len(todo)
