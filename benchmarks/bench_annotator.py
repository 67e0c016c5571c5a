"""Annotator speed: stroke-to-saved latency and viewport render time on 2k² and 10k² images.

Not a test. Images are tiles of the real nuclei image (read lazily, so the 10k² image is never
in memory). Prints a markdown table.

    python -m benchmarks.bench_annotator [--sizes 2048 10240] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from benchmarks._common import NUCLEI_DIR
from workbench.store import Project
from workbench_widgets.annotator import Annotator

NUCLEI = NUCLEI_DIR / "image.tif"


class TiledImage:
    """A ``size x size`` image made of repeated tiles, produced region by region on request."""

    def __init__(self, tile: np.ndarray, size: int):
        self.tile = tile
        self.shape = (size, size)
        self.dtype = tile.dtype
        self.ndim = 2

    def __getitem__(self, key):
        ys, xs = key
        rows = np.arange(*ys.indices(self.shape[0])) % self.tile.shape[0]
        cols = np.arange(*xs.indices(self.shape[1])) % self.tile.shape[1]
        return self.tile[rows[:, None], cols[None, :]]


def _ms(samples) -> str:
    return f"{1000 * statistics.median(samples):.1f}"


def bench_size(root: Path, tile: np.ndarray, size: int, repeats: int) -> dict:
    project = Project.create(root / f"p{size}", mode="instance", classes=["background", "nucleus"])
    start = time.perf_counter()
    project.add_image(TiledImage(tile, size), name="big", axes="YX")
    add_s = time.perf_counter() - start
    start = time.perf_counter()
    annotator = Annotator(project, "big", width=800, height=600, save_delay=0)  # builds the pyramid
    open_s = time.perf_counter() - start
    row = {"size": size, "add_s": add_s, "open_s": open_s, "levels": annotator.pyramid.factors}

    def timed_renders(move):
        samples = []
        for i in range(repeats):
            move(i)
            start = time.perf_counter()
            annotator.render()
            samples.append(time.perf_counter() - start)
        return samples

    annotator.fit()
    row["render_fit"] = timed_renders(lambda i: annotator.viewport.pan(3, 0))
    annotator.set_view((size / 2, size / 2), 1.0)
    row["render_1to1"] = timed_renders(lambda i: annotator.viewport.pan(40, 25))
    annotator.set_view((size / 2, size / 2), 4.0)
    row["render_zoom4"] = timed_renders(lambda i: annotator.viewport.pan(40, 25))
    # Pan as the user does: one drag event = move the view + render every layer.
    annotator.set_view((size / 2, size / 2), 0.25)
    pan = []
    for i in range(repeats):
        start = time.perf_counter()
        annotator.pan_by(15, 10)
        pan.append(time.perf_counter() - start)
    row["pan_event"] = pan

    # Stroke: mouse down, 10 moves, up -> rasterised, overlay re-rendered, chunks written atomically.
    annotator.set_view((size / 2, size / 2), 2.0)
    strokes, saves = [], []
    for i in range(repeats):
        y = 100 + 30 * i
        annotator.handle_mouse_down(100, y)
        for k in range(1, 11):
            annotator.handle_mouse_move(100 + 20 * k, y + 3 * (k % 2))
        start = time.perf_counter()
        annotator.handle_mouse_up(320, y)
        strokes.append(time.perf_counter() - start)
        saved = Project.open(project.path).read_labels("big")[
            annotator.viewport.canvas_to_pixel(200, y)]
        assert saved == 2, "stroke not in the store"
    # The save alone (what the debounce timer runs after the last stroke).
    for i in range(repeats):
        annotator.editor.save_delay = 60  # keep the timer from saving first
        annotator.paint([(size / 2 + 5 * i, size / 2), (size / 2 + 5 * i, size / 2 + 200)], 2, diameter=8)
        start = time.perf_counter()
        annotator.flush()
        saves.append(time.perf_counter() - start)
    annotator.editor.save_delay = 0
    row["stroke_to_saved"] = strokes
    row["save_only"] = saves
    annotator.close()
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 10240])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    tile = tifffile.imread(NUCLEI)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            rows.append(bench_size(Path(tmp), tile, size, args.repeats))
    print("| image | add to project (s) | open incl. pyramid build (s) | levels | render fit (ms) | "
          "render 1:1 (ms) | render 4× (ms) | pan event (ms) | stroke → saved (ms) | save only (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}² uint16 | {r['add_s']:.1f} | {r['open_s']:.1f} | {len(r['levels'])} | "
              f"{_ms(r['render_fit'])} | {_ms(r['render_1to1'])} | {_ms(r['render_zoom4'])} | "
              f"{_ms(r['pan_event'])} | {_ms(r['stroke_to_saved'])} | {_ms(r['save_only'])} |")
    print(f"\nmedians of {args.repeats}; canvas 800×600; render = image JPEG + label/prediction PNG "
          "encoded as sent to the browser; stroke = mouse-up to labels written in the store (save_delay=0).")


if __name__ == "__main__":
    main()
