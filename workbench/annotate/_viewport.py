"""Where the canvas looks: the mapping between canvas pixels and image pixels.

A `Viewport` is pure geometry (no widgets): the canvas size in pixels, the zoom (canvas pixels per
image pixel) and the image coordinate shown at the canvas's top-left corner. Image pixel ``(i, j)``
covers the continuous square ``[i, i + 1) x [j, j + 1)`` in ``(y, x)``; canvas pixel ``(r, c)``
covers ``[r, r + 1) x [c, c + 1)``. A canvas pixel shows the image pixel under its centre, so a
mouse event at canvas ``(x, y)`` lands in image pixel ``floor(canvas_to_image(x, y))`` at every
zoom and pan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.errors import WorkbenchError

MIN_ZOOM = 1 / 256
MAX_ZOOM = 64.0

__all__ = ["Viewport", "MIN_ZOOM", "MAX_ZOOM"]


@dataclass
class Viewport:
    """A canvas of ``width x height`` pixels looking at an image.

    Parameters
    ----------
    width, height : int
        Canvas size in canvas pixels.
    zoom : float
        Canvas pixels per image pixel (2 = each image pixel drawn as a 2 x 2 block).
    origin_y, origin_x : float
        Image coordinate shown at the canvas's top-left corner.

    Examples
    --------
    >>> vp = Viewport(800, 600, zoom=2.0, origin_y=10.0, origin_x=20.0)
    >>> vp.canvas_to_image(0, 0)
    (10.0, 20.0)
    >>> vp.image_to_canvas(15.0, 30.0)  # mouse order (x, y)
    (20.0, 10.0)
    """

    width: int
    height: int
    zoom: float = 1.0
    origin_y: float = 0.0
    origin_x: float = 0.0

    def __post_init__(self) -> None:
        if int(self.width) < 1 or int(self.height) < 1:
            raise WorkbenchError(
                f"a viewport needs a positive canvas size, got width={self.width}, height={self.height}"
            )
        self.width, self.height = int(self.width), int(self.height)
        self.zoom = _check_zoom(self.zoom)

    # ------------------------------------------------------------------ mapping
    def canvas_to_image(self, canvas_x: float, canvas_y: float) -> tuple[float, float]:
        """Continuous image coordinate ``(y, x)`` under canvas point ``(x, y)`` (mouse order)."""
        return (self.origin_y + canvas_y / self.zoom, self.origin_x + canvas_x / self.zoom)

    def image_to_canvas(self, y: float, x: float) -> tuple[float, float]:
        """Canvas point ``(x, y)`` (mouse order) of continuous image coordinate ``(y, x)``."""
        return ((x - self.origin_x) * self.zoom, (y - self.origin_y) * self.zoom)

    def canvas_to_pixel(self, canvas_x: float, canvas_y: float) -> tuple[int, int]:
        """Index ``(row, column)`` of the image pixel under a canvas point."""
        y, x = self.canvas_to_image(canvas_x, canvas_y)
        return int(np.floor(y)), int(np.floor(x))

    @property
    def center(self) -> tuple[float, float]:
        """Image coordinate ``(y, x)`` at the centre of the canvas."""
        return self.canvas_to_image(self.width / 2, self.height / 2)

    def visible_region(self, image_shape: tuple[int, int]) -> tuple[slice, slice]:
        """Rows and columns of the image pixels at least partly on the canvas (clipped to the image)."""
        height, width = int(image_shape[0]), int(image_shape[1])
        y0, x0 = self.canvas_to_image(0, 0)
        y1, x1 = self.canvas_to_image(self.width, self.height)
        rows = slice(int(np.clip(np.floor(y0), 0, height)), int(np.clip(np.ceil(y1), 0, height)))
        cols = slice(int(np.clip(np.floor(x0), 0, width)), int(np.clip(np.ceil(x1), 0, width)))
        return rows, cols

    # ------------------------------------------------------------------ moving
    def set_view(self, center: tuple[float, float], zoom: float | None = None) -> None:
        """Put image coordinate ``center = (y, x)`` in the middle of the canvas at `zoom`."""
        if zoom is not None:
            self.zoom = _check_zoom(zoom)
        cy, cx = float(center[0]), float(center[1])
        self.origin_y = cy - self.height / (2 * self.zoom)
        self.origin_x = cx - self.width / (2 * self.zoom)

    def fit(self, image_shape: tuple[int, int]) -> None:
        """Show the whole image, centred, as large as the canvas allows."""
        height, width = int(image_shape[0]), int(image_shape[1])
        zoom = min(self.width / width, self.height / height)
        self.set_view((height / 2, width / 2), float(np.clip(zoom, MIN_ZOOM, MAX_ZOOM)))

    def zoom_at(self, factor: float, canvas_x: float | None = None, canvas_y: float | None = None) -> None:
        """Zoom by `factor`, keeping the image point under canvas ``(x, y)`` (default: the centre) fixed."""
        if canvas_x is None or canvas_y is None:
            canvas_x, canvas_y = self.width / 2, self.height / 2
        y, x = self.canvas_to_image(canvas_x, canvas_y)
        self.zoom = float(np.clip(self.zoom * float(factor), MIN_ZOOM, MAX_ZOOM))
        self.origin_y = y - canvas_y / self.zoom
        self.origin_x = x - canvas_x / self.zoom

    def pan(self, canvas_dx: float, canvas_dy: float) -> None:
        """Move the image by ``(dx, dy)`` canvas pixels (as a drag does)."""
        self.origin_x -= canvas_dx / self.zoom
        self.origin_y -= canvas_dy / self.zoom

    def clamp(self, image_shape: tuple[int, int]) -> None:
        """Keep the canvas centre over the image so the image can never be panned out of sight."""
        cy, cx = self.center
        height, width = float(image_shape[0]), float(image_shape[1])
        self.set_view((float(np.clip(cy, 0, height)), float(np.clip(cx, 0, width))))

    # ------------------------------------------------------------------ sampling
    def level_for(self, factors: list[int]) -> int:
        """The coarsest pyramid factor that still gives at least one level pixel per canvas pixel."""
        best = 1
        for factor in sorted(factors):
            if factor <= 1.0 / self.zoom + 1e-9:
                best = factor
        return best

    def sample_grid(self, image_shape: tuple[int, int], factor: int = 1):
        """Which level pixel each canvas row and column shows.

        Parameters
        ----------
        image_shape : (int, int)
            Full-resolution ``(Y, X)`` of the image.
        factor : int
            Downsampling factor of the pyramid level that will be sampled.

        Returns
        -------
        rows, cols : int arrays of length ``height`` and ``width``
            Level pixel index per canvas row / column, relative to ``region``'s start.
        row_ok, col_ok : bool arrays
            False where the canvas row / column lies outside the image.
        region : (slice, slice)
            The level's rows and columns to read, or None when nothing of the image is visible.
        """
        height, width = int(image_shape[0]), int(image_shape[1])
        image_rows = np.floor(self.origin_y + (np.arange(self.height) + 0.5) / self.zoom).astype(np.int64)
        image_cols = np.floor(self.origin_x + (np.arange(self.width) + 0.5) / self.zoom).astype(np.int64)
        row_ok = (image_rows >= 0) & (image_rows < height)
        col_ok = (image_cols >= 0) & (image_cols < width)
        level_rows = np.clip(image_rows, 0, height - 1) // factor
        level_cols = np.clip(image_cols, 0, width - 1) // factor
        if not row_ok.any() or not col_ok.any():
            return level_rows * 0, level_cols * 0, row_ok, col_ok, None
        r0, r1 = int(level_rows[row_ok].min()), int(level_rows[row_ok].max()) + 1
        c0, c1 = int(level_cols[col_ok].min()), int(level_cols[col_ok].max()) + 1
        rows = np.clip(level_rows - r0, 0, r1 - r0 - 1)
        cols = np.clip(level_cols - c0, 0, c1 - c0 - 1)
        return rows, cols, row_ok, col_ok, (slice(r0, r1), slice(c0, c1))

    def copy(self) -> "Viewport":
        return Viewport(self.width, self.height, self.zoom, self.origin_y, self.origin_x)


def _check_zoom(zoom: float) -> float:
    try:
        zoom = float(zoom)
    except (TypeError, ValueError):
        raise WorkbenchError(f"zoom must be a number (canvas pixels per image pixel), got {zoom!r}") from None
    if not np.isfinite(zoom) or zoom <= 0:
        raise WorkbenchError(f"zoom must be a positive number (canvas pixels per image pixel), got {zoom}")
    return float(np.clip(zoom, MIN_ZOOM, MAX_ZOOM))
