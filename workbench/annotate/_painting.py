"""Painting labels: brush and lasso rasterisation, an edit history, and debounced atomic saving.

No widgets here: `LabelEditor` is what the annotator widget drives, and what tests drive without a
browser. It keeps the touched label chunks of one image in memory, so a stroke shows at once and
the next stroke sees it, and writes the changed chunks to the project store shortly after the
strokes stop (`save_delay`): each chunk is replaced atomically by `Project.write_labels`, so a
crash or a closed tab loses at most the last stroke.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from skimage.draw import polygon as _polygon

from workbench.annotate._convention import PART_OF_OBJECT, looks_like_part_of_an_object, stroke_window
from workbench.conventions import OBJECT
from workbench.errors import WorkbenchError
from workbench.store import label_statistics, statistics_from_counts

DEFAULT_SAVE_DELAY = 0.3  # seconds without a new stroke before the changed chunks are written
MAX_UNDO = 50

__all__ = ["Edit", "LabelsChanged", "LabelEditor", "rasterize_stroke", "rasterize_lasso", "DEFAULT_SAVE_DELAY"]


def _as_points(points, name: str = "points") -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise WorkbenchError(
            f"{name} must be a non-empty list of (y, x) image coordinates, got an array of shape {pts.shape}"
        )
    return pts


def rasterize_stroke(points, diameter: float, shape: tuple[int, int]):
    """Pixels a round brush of `diameter` covers along a polyline.

    A pixel is painted when its centre lies within ``diameter / 2`` of the polyline, and the pixel
    under every point is always painted (so a 1-pixel brush paints what the cursor is over).

    Parameters
    ----------
    points : sequence of (y, x)
        Continuous image coordinates (pixel ``(i, j)`` spans ``[i, i+1) x [j, j+1)``).
    diameter : float
        Brush size in image pixels (>= 1).
    shape : (int, int)
        Image ``(Y, X)``; the result is clipped to it.

    Returns
    -------
    region : (slice, slice) or None
        Bounding box of the painted pixels (None when the stroke misses the image).
    mask : (h, w) bool array or None
    """
    pts = _as_points(points)
    if not float(diameter) >= 1:
        raise WorkbenchError(f"brush diameter must be at least 1 pixel, got {diameter}")
    radius = float(diameter) / 2.0
    height, width = int(shape[0]), int(shape[1])
    y0 = max(int(np.floor(pts[:, 0].min() - radius)), 0)
    y1 = min(int(np.ceil(pts[:, 0].max() + radius)) + 1, height)
    x0 = max(int(np.floor(pts[:, 1].min() - radius)), 0)
    x1 = min(int(np.ceil(pts[:, 1].max() + radius)) + 1, width)
    if y1 <= y0 or x1 <= x0:
        return None, None
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    segments = list(zip(pts[:-1], pts[1:])) or [(pts[0], pts[0])]
    for (ay, ax), (by, bx) in segments:
        # Only the segment's own bounding box can be within reach of it.
        sy0 = max(int(np.floor(min(ay, by) - radius)), y0)
        sy1 = min(int(np.ceil(max(ay, by) + radius)) + 1, y1)
        sx0 = max(int(np.floor(min(ax, bx) - radius)), x0)
        sx1 = min(int(np.ceil(max(ax, bx) + radius)) + 1, x1)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        cy = np.arange(sy0, sy1, dtype=np.float64)[:, None] + 0.5
        cx = np.arange(sx0, sx1, dtype=np.float64)[None, :] + 0.5
        dy, dx = by - ay, bx - ax
        length2 = dy * dy + dx * dx
        t = 0.0 if length2 == 0 else np.clip(((cy - ay) * dy + (cx - ax) * dx) / length2, 0.0, 1.0)
        dist2 = (cy - (ay + t * dy)) ** 2 + (cx - (ax + t * dx)) ** 2
        mask[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] |= dist2 <= radius * radius
    under = np.floor(pts).astype(np.int64)
    inside = (under[:, 0] >= y0) & (under[:, 0] < y1) & (under[:, 1] >= x0) & (under[:, 1] < x1)
    mask[under[inside, 0] - y0, under[inside, 1] - x0] = True
    if not mask.any():
        return None, None
    return (slice(y0, y1), slice(x0, x1)), mask


def rasterize_lasso(points, shape: tuple[int, int]):
    """Pixels inside a closed outline (the last point joins the first).

    A pixel is inside when its centre is; the pixels under the outline's points are included too,
    so what the cursor went over is filled. Returns ``(region, mask)`` as `rasterize_stroke`.
    """
    pts = _as_points(points)
    height, width = int(shape[0]), int(shape[1])
    # polygon() tests integer points: shifting by half a pixel makes it test pixel centres.
    rr, cc = _polygon(pts[:, 0] - 0.5, pts[:, 1] - 0.5, shape=(height, width))
    under = np.floor(pts).astype(np.int64)
    keep = (under[:, 0] >= 0) & (under[:, 0] < height) & (under[:, 1] >= 0) & (under[:, 1] < width)
    rr = np.concatenate([rr, under[keep, 0]])
    cc = np.concatenate([cc, under[keep, 1]])
    if rr.size == 0:
        return None, None
    y0, y1, x0, x1 = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[rr - y0, cc - x0] = True
    return (slice(int(y0), int(y1)), slice(int(x0), int(x1))), mask


@dataclass
class Edit:
    """One undoable change: a region of one z-plane before and after.

    ``warning`` is a plain-language note on the stroke for the person painting (instance mode: the
    stroke looks like part of an object, `PART_OF_OBJECT`), or None.
    """

    z: int
    region: tuple[slice, slice]
    before: np.ndarray
    after: np.ndarray
    warning: str | None = None


@dataclass
class LabelsChanged:
    """What a labels-changed callback receives once changed labels are saved in the store."""

    image: str
    z: int | None
    regions: list[tuple[slice, slice]] = field(default_factory=list)


class LabelEditor:
    """Edit one image's label layer with undo/redo, saving changed chunks shortly after.

    Parameters
    ----------
    project : workbench.store.Project
    name : str
        An image of the project.
    save_delay : float
        Seconds after the last edit before changed chunks are written; 0 writes at once (tests).
    max_undo : int
        Edits kept for undo.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from workbench.store import Project
    >>> project = Project.create(tempfile.mkdtemp() + "/p", classes=["background", "cell"])
    >>> name = project.add_image(np.zeros((64, 64), np.uint8), name="img")
    >>> editor = LabelEditor(project, "img", save_delay=0)
    >>> _ = editor.paint([(10, 10), (10, 40)], value=2, diameter=5)
    >>> int(project.labels("img")[10, 20])
    2
    >>> _ = editor.undo()
    >>> int(project.labels("img")[10, 20])
    0
    """

    def __init__(self, project, name: str, *, save_delay: float = DEFAULT_SAVE_DELAY, max_undo: int = MAX_UNDO):
        self.project = project
        self.name = name
        self.array = project.labels(name)
        self.is_stack = self.array.ndim == 3
        self.shape = tuple(int(s) for s in self.array.shape[-2:])
        self.n_slices = int(self.array.shape[0]) if self.is_stack else 1
        self.chunk = tuple(int(c) for c in self.array.chunks[-2:])
        self.dtype = np.dtype(self.array.dtype)
        self.save_delay = float(save_delay)
        self.max_undo = int(max_undo)
        self._chunks: dict[tuple[int, int, int], np.ndarray] = {}
        self._dirty: set[tuple[int, int, int]] = set()
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._edit_listeners: list[Callable[[Edit], None]] = []
        self._saved_listeners: list[Callable[[LabelsChanged], None]] = []
        self.save_errors: list[BaseException] = []
        self._image = None  # the project's image, opened on the first check of a stroke
        self.counts = self._count_all()

    # ------------------------------------------------------------------ reading
    def _check_z(self, z: int) -> int:
        z = int(z)
        if not 0 <= z < self.n_slices:
            raise WorkbenchError(f"image {self.name!r} has {self.n_slices} z-slice(s); slice {z} does not exist")
        return z

    def _chunk(self, z: int, cy: int, cx: int) -> np.ndarray:
        key = (z, cy, cx)
        block = self._chunks.get(key)
        if block is None:
            ys = slice(cy * self.chunk[0], min((cy + 1) * self.chunk[0], self.shape[0]))
            xs = slice(cx * self.chunk[1], min((cx + 1) * self.chunk[1], self.shape[1]))
            lead = (z,) if self.is_stack else ()
            block = np.array(self.array[lead + (ys, xs)], dtype=self.dtype)
            self._chunks[key] = block
        return block

    def _chunk_span(self, region: tuple[slice, slice]):
        ys, xs = region
        for cy in range(ys.start // self.chunk[0], -(-ys.stop // self.chunk[0])):
            for cx in range(xs.start // self.chunk[1], -(-xs.stop // self.chunk[1])):
                oy, ox = cy * self.chunk[0], cx * self.chunk[1]
                inner = (slice(max(ys.start, oy) - oy, min(ys.stop, oy + self.chunk[0]) - oy),
                         slice(max(xs.start, ox) - ox, min(xs.stop, ox + self.chunk[1]) - ox))
                outer = (slice(inner[0].start + oy - ys.start, inner[0].stop + oy - ys.start),
                         slice(inner[1].start + ox - xs.start, inner[1].stop + ox - xs.start))
                yield (cy, cx), inner, outer

    def read(self, ys: slice, xs: slice, z: int = 0) -> np.ndarray:
        """Current labels of a region (unsaved edits included)."""
        z = self._check_z(z)
        ys = slice(*ys.indices(self.shape[0])[:2])
        xs = slice(*xs.indices(self.shape[1])[:2])
        out = np.zeros((max(ys.stop - ys.start, 0), max(xs.stop - xs.start, 0)), self.dtype)
        if out.size == 0:
            return out
        with self._lock:
            untouched = not any(k[0] == z for k in self._chunks)
            if untouched:  # nothing cached for this plane: one zarr read is fastest
                lead = (z,) if self.is_stack else ()
                return np.asarray(self.array[lead + (ys, xs)], dtype=self.dtype)
            for (cy, cx), inner, outer in self._chunk_span((ys, xs)):
                if (z, cy, cx) in self._chunks:
                    out[outer] = self._chunks[(z, cy, cx)][inner]
                else:
                    oy, ox = cy * self.chunk[0], cx * self.chunk[1]
                    lead = (z,) if self.is_stack else ()
                    out[outer] = self.array[lead + (slice(oy + inner[0].start, oy + inner[0].stop),
                                                    slice(ox + inner[1].start, ox + inner[1].stop))]
        return out

    def read_plane(self, z: int = 0) -> np.ndarray:
        return self.read(slice(0, self.shape[0]), slice(0, self.shape[1]), z)

    # ------------------------------------------------------------------ editing
    def _put(self, z: int, region: tuple[slice, slice], values: np.ndarray) -> None:
        for (cy, cx), inner, outer in self._chunk_span(region):
            self._chunk(z, cy, cx)[inner] = values[outer]
            self._dirty.add((z, cy, cx))

    def apply(self, region, mask: np.ndarray, value: int, z: int = 0) -> Edit | None:
        """Set the masked pixels of `region` to `value` as one undoable edit (None if nothing changed)."""
        if region is None:
            return None
        z = self._check_z(z)
        value = int(value)
        if not 0 <= value <= self.project.n_classes:
            raise WorkbenchError(
                f"label value {value} is not valid: the project has {self.project.n_classes} classes, so values "
                f"are 0 (not annotated) to {self.project.n_classes}"
            )
        with self._lock:
            before = self.read(region[0], region[1], z)
            after = before.copy()
            after[mask] = value
            if np.array_equal(before, after):
                return None
            edit = Edit(z=z, region=region, before=before, after=after)
            self._commit(edit, after, before)
            self._undo.append(edit)
            del self._undo[:-self.max_undo]
            self._redo.clear()
        self._after_edit(edit)
        return edit

    def paint(self, points, value: int, diameter: float, z: int = 0) -> Edit | None:
        """Paint a round-brush stroke through `points` ((y, x) image coordinates) with `value`."""
        region, mask = rasterize_stroke(points, diameter, self.shape)
        return self._checked(self.apply(region, mask, value, z), mask)

    def fill(self, points, value: int, z: int = 0) -> Edit | None:
        """Fill the closed outline through `points` with `value`."""
        region, mask = rasterize_lasso(points, self.shape)
        return self._checked(self.apply(region, mask, value, z), mask)

    def _checked(self, edit: Edit | None, mask: np.ndarray) -> Edit | None:
        """Instance mode: note on `edit` when its object paint stops inside an object (the convention)."""
        if edit is None or self.project.mode != "instance" or int(edit.after[mask].max()) < OBJECT:
            return edit
        edit.warning = self.part_of_object_warning(edit.region, mask, edit.z)
        return edit

    def part_of_object_warning(self, region: tuple[slice, slice], mask: np.ndarray, z: int = 0) -> str | None:
        """`PART_OF_OBJECT` when the object paint under `mask` (in `region`) covers only part of an object.

        Judged on the current labels and the image around the stroke by
        `looks_like_part_of_an_object`; None when it looks whole (or cannot be judged).
        """
        window = stroke_window(region, self.shape)
        if window is None:
            return None
        labels = self.read(window[0], window[1], z)
        painted = np.zeros(labels.shape, bool)
        oy, ox = region[0].start - window[0].start, region[1].start - window[1].start
        painted[oy:oy + mask.shape[0], ox:ox + mask.shape[1]] = mask
        if self._image is None:
            self._image = self.project.image(self.name)
        pixels = np.asarray(self._image.plane(z)[:, window[0], window[1]])
        return PART_OF_OBJECT if looks_like_part_of_an_object(labels, pixels, painted) else None

    def _commit(self, edit: Edit, new: np.ndarray, old: np.ndarray) -> None:
        self._put(edit.z, edit.region, new)
        n = len(self.counts)
        self.counts += np.bincount(new.ravel(), minlength=n)[:n] - np.bincount(old.ravel(), minlength=n)[:n]

    def undo(self) -> Edit | None:
        """Take back the last edit (None when there is nothing to undo)."""
        with self._lock:
            if not self._undo:
                return None
            edit = self._undo.pop()
            self._commit(edit, edit.before, edit.after)
            self._redo.append(edit)
        self._after_edit(edit)
        return edit

    def redo(self) -> Edit | None:
        """Apply again the last undone edit (None when there is nothing to redo)."""
        with self._lock:
            if not self._redo:
                return None
            edit = self._redo.pop()
            self._commit(edit, edit.after, edit.before)
            self._undo.append(edit)
        self._after_edit(edit)
        return edit

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def on_edit(self, callback: Callable[[Edit], None]) -> Callable[[Edit], None]:
        """Call ``callback(edit)`` right after every edit, undo and redo (before saving)."""
        self._edit_listeners.append(callback)
        return callback

    def on_saved(self, callback: Callable[[LabelsChanged], None]) -> Callable[[LabelsChanged], None]:
        """Call ``callback(LabelsChanged)`` after changed labels are written to the store."""
        self._saved_listeners.append(callback)
        return callback

    def _after_edit(self, edit: Edit) -> None:
        for callback in list(self._edit_listeners):
            callback(edit)
        self._schedule_save()

    # ------------------------------------------------------------------ saving
    def _schedule_save(self) -> None:
        if self.save_delay <= 0:
            self.flush()
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.save_delay, self._save_in_background)
            self._timer.daemon = True
            self._timer.start()

    def _save_in_background(self) -> None:
        try:
            self.flush()
        except BaseException as exc:  # a thread has nobody to raise to: keep it for the widget to show
            self.save_errors.append(exc)

    @property
    def pending(self) -> bool:
        """Whether some edits are not in the store yet."""
        return bool(self._dirty)

    def flush(self) -> LabelsChanged | None:
        """Write every changed chunk to the store now, one atomic chunk write each."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._dirty:
                return None
            keys = sorted(self._dirty)
            blocks = {k: self._chunks[k].copy() for k in keys}
            self._dirty.clear()
        event_regions: dict[int, list] = {}
        for (z, cy, cx) in keys:
            block = blocks[(z, cy, cx)]
            region = (slice(cy * self.chunk[0], cy * self.chunk[0] + block.shape[0]),
                      slice(cx * self.chunk[1], cx * self.chunk[1] + block.shape[1]))
            try:
                self.project.write_labels(self.name, block, region=region, z=z if self.is_stack else None)
            except BaseException:
                with self._lock:
                    self._dirty.add((z, cy, cx))  # try again with the next save
                raise
            event_regions.setdefault(z, []).append(region)
        # Clean chunks need not stay in memory once the plane is shown from the store again.
        with self._lock:
            for key in [k for k in self._chunks if k not in self._dirty]:
                del self._chunks[key]
        event = None
        for z, regions in event_regions.items():
            event = LabelsChanged(image=self.name, z=z if self.is_stack else None, regions=regions)
            for callback in list(self._saved_listeners):
                callback(event)
        return event

    def close(self) -> None:
        """Save what is pending and stop the save timer."""
        self.flush()

    # ------------------------------------------------------------------ statistics
    def _count_all(self) -> np.ndarray:
        n = self.project.n_classes + 1
        counts = np.zeros(n, np.int64)
        planes = range(self.n_slices)
        step = 2048
        for z in planes:
            lead = (z,) if self.is_stack else ()
            for y in range(0, self.shape[0], step):
                for x in range(0, self.shape[1], step):
                    block = np.asarray(self.array[lead + (slice(y, y + step), slice(x, x + step))])
                    counts += np.bincount(block.ravel(), minlength=n)[:n]
        return counts

    def statistics(self, *, count_objects: bool = True, max_object_pixels: int = 50_000_000) -> dict:
        """Pixels per class, annotated fraction and (instance mode) painted objects.

        Objects are counted on the current labels of every plane unless the image has more than
        `max_object_pixels` pixels (then ``objects`` is None: counting would take seconds).
        """
        names = self.project.class_names
        total = int(self.shape[0] * self.shape[1] * self.n_slices)
        objects = None
        if self.project.mode == "instance" and count_objects and total <= max_object_pixels:
            planes = np.stack([self.read_plane(z) for z in range(self.n_slices)])
            objects = label_statistics(planes, names, "instance", volume=self.project.boundaries == "3d")["objects"]
        return statistics_from_counts(self.counts, names, total, self.project.mode, objects=objects)

