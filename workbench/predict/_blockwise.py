"""Instances and measurements of images larger than memory, block by block, independent of the grid.

The image is cut into blocks; each block is segmented together with a halo of
context around it (at least the extent of the largest object), by the ordinary
instance function (`instances_from_probabilities` unless another is passed), and
only the block's own core is written. Three ideas make the result independent of
the block grid:

* **Ids from anchors.** An object's id is one plus the global raster index of its
  first pixel (its "anchor"). Two blocks that both see an object whole give it the
  same id without talking to each other, so an object crossing a face, or a
  corner, carries one id on both sides.
* **Mutual links across faces.** Where the two views of an object differ (ties in
  the watershed, an object wider than the halo), each block also records, for
  every object of its core that runs into a neighbour's core, the deepest pixel of
  that object on the neighbour's side. After all cores are written, two ids that
  point at each other (a's deep pixel in B reads b, b's deep pixel in A reads a)
  are one object and are merged (union-find over all such pairs). Requiring both
  directions keeps two touching nuclei on either side of a face apart.
* **Final ids in raster order** of each merged object's first anchor, 1..N, as
  int32, applied block by block from a lookup table.

Blocks without foreground in their window (a cheap max over the background
probability) are skipped and counted. Cellpose's ``distributed_segmentation``
merges every pair of labels touching across a face, and dask-image's
``ndmeasure.label`` does the same for connected components; for seeded watershed
that would fuse touching nuclei, hence the anchored ids and the mutual test.

Measurements stream the same way: each block measures the objects whose bounding
box starts in its core (so an object on a face is measured once), on its window,
and nearest-neighbour distances come last from a k-d tree over all centroids.

The block functions take arrays (numpy or zarr) and return small records, so a
serial loop, a thread pool or `dask.distributed` can drive them (see
`workbench.batch`).

Example
-------
>>> import numpy as np
>>> probabilities = np.zeros((3, 40, 40), np.float32)
>>> probabilities[0] = 1
>>> probabilities[:, 5:25, 12:22] = np.array([0, 1, 0], np.float32)[:, None, None]
>>> labels, summary = blockwise_instances(probabilities, block_size=16, halo=8, min_size=4)
>>> int(labels.max()), int((labels == 1).sum()), summary.skipped_empty
(1, 200, 3)
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import relabel_sequential

from workbench.errors import WorkbenchError

__all__ = [
    "BlockGrid",
    "BlockRecord",
    "BlockwiseError",
    "BlockwiseSummary",
    "RelabelTable",
    "blockwise_instances",
    "merge_blocks",
    "segment_block",
    "relabel_block",
    "measure_block",
    "neighbour_distances",
]

InstanceFunction = Callable[..., np.ndarray]


class BlockwiseError(WorkbenchError, ValueError):
    """A block size, halo or array that blockwise processing cannot use."""


def _as_tuple(value: Any, ndim: int, name: str, minimum: int) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, numbers.Integral) else tuple(value)
    if len(values) != ndim or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum for v in values
    ):
        raise BlockwiseError(
            f"`{name}` must be an integer >= {minimum} or one per spatial axis ({ndim}), got {value!r}."
        )
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class BlockGrid:
    """A regular grid of blocks over a spatial shape, each block read with a halo around it.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the image (Y, X) or (Z, Y, X).
    block : tuple of int
        Core size of a block per axis; the last block of an axis may be smaller.
    halo : tuple of int
        Context read on each side of a core, clipped at the image border.
    """

    shape: tuple[int, ...]
    block: tuple[int, ...]
    halo: tuple[int, ...]

    @classmethod
    def create(cls, shape: Iterable[int], block_size: int | Iterable[int], halo: int | Iterable[int]) -> BlockGrid:
        """A grid with one block size and halo for every axis, or one per axis."""
        shape = tuple(int(s) for s in shape)
        if not shape or min(shape) < 1:
            raise BlockwiseError(f"the image's spatial shape must have no empty axis, got {shape}.")
        return cls(shape, _as_tuple(block_size, len(shape), "block_size", 1),
                   _as_tuple(halo, len(shape), "halo", 0))

    @property
    def counts(self) -> tuple[int, ...]:
        """Blocks along each axis."""
        return tuple(-(-s // b) for s, b in zip(self.shape, self.block))

    @property
    def n_blocks(self) -> int:
        return math.prod(self.counts)

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Block indices in row-major order."""
        return itertools.product(*(range(c) for c in self.counts))

    def core(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The pixels a block owns."""
        return tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(index, self.block, self.shape))

    def window(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The core with its halo, clipped to the image."""
        return tuple(slice(max(c.start - h, 0), min(c.stop + h, s))
                     for c, h, s in zip(self.core(index), self.halo, self.shape))

    def neighbours(self, index: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        """The blocks sharing a face, an edge or a corner with this one."""
        for offset in itertools.product((-1, 0, 1), repeat=len(index)):
            if any(offset):
                other = tuple(i + o for i, o in zip(index, offset))
                if all(0 <= i < c for i, c in zip(other, self.counts)):
                    yield other


@dataclass
class BlockRecord:
    """What one block reports after segmentation: small, whatever the block size.

    ids : int64 array
        The anchored ids written into the block's core.
    links : int64 array, shape (n, 1 + ndim)
        Per object of the core that runs into a neighbour's core: its id and the
        global coordinates of its deepest pixel there.
    skipped : bool
        The window held no foreground, nothing was segmented or written.
    """

    index: tuple[int, ...]
    ids: np.ndarray
    links: np.ndarray
    skipped: bool = False

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (loadable without pickle)."""
        return {"index": np.asarray(self.index, np.int64), "ids": self.ids, "links": self.links,
                "skipped": np.asarray(self.skipped)}

    @classmethod
    def from_arrays(cls, arrays: Any) -> BlockRecord:
        return cls(tuple(int(i) for i in arrays["index"]), np.asarray(arrays["ids"]),
                   np.asarray(arrays["links"]), bool(arrays["skipped"]))


@dataclass
class RelabelTable:
    """Anchored ids (sorted) and the final id 1..N of each."""

    anchored: np.ndarray
    final: np.ndarray
    merged: int = 0

    @property
    def n_objects(self) -> int:
        return int(self.final.max()) if len(self.final) else 0

    def apply(self, ids: np.ndarray) -> np.ndarray:
        """Final int32 ids of an array of anchored ids (0 stays 0)."""
        ids = np.asarray(ids)
        result = np.zeros(ids.shape, np.int32)
        inside = ids > 0
        if inside.any() and len(self.anchored):
            position = np.searchsorted(self.anchored, ids[inside])
            result[inside] = self.final[np.minimum(position, len(self.final) - 1)]
        return result


@dataclass
class BlockwiseSummary:
    """How a blockwise run went, for the command line and the benchmarks."""

    objects: int
    blocks: int
    skipped_empty: int
    merged_across_faces: int
    resumed_blocks: int = 0
    truncated: int = 0
    notes: list[str] = field(default_factory=list)


def _local_slices(inner: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))


def _interior(labels: np.ndarray) -> np.ndarray:
    """Object pixels whose face neighbours all carry the same id."""
    interior = labels > 0
    for axis in range(labels.ndim):
        lower = [slice(None)] * labels.ndim
        upper = [slice(None)] * labels.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        differs = labels[tuple(lower)] != labels[tuple(upper)]
        interior[tuple(lower)] &= ~differs
        interior[tuple(upper)] &= ~differs
    return interior


def _anchored(local: np.ndarray, offset: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Lookup local id -> global anchored id (1 + raster index of the object's first pixel)."""
    values, first = np.unique(local.ravel(), return_index=True)
    keep = values > 0
    values, first = values[keep], first[keep]
    lut = np.zeros(int(local.max()) + 1, np.int64)
    if len(values):
        coords = np.unravel_index(first, local.shape)
        global_coords = tuple(c + o for c, o in zip(coords, offset))
        lut[values] = np.ravel_multi_index(global_coords, shape).astype(np.int64) + 1
    return lut


def has_foreground(probabilities: np.ndarray, foreground_threshold: float) -> bool:
    """Whether any pixel is foreground (1 - background probability above the threshold)."""
    return bool((1.0 - np.min(probabilities[0])) > foreground_threshold)


def segment_block(
    probabilities: Any,
    ids_out: Any,
    grid: BlockGrid,
    index: tuple[int, ...],
    *,
    instance_function: InstanceFunction | None = None,
    foreground_threshold: float = 0.5,
    **options: Any,
) -> BlockRecord:
    """Segment one block with its halo and write anchored ids into its core.

    Parameters
    ----------
    probabilities : array-like, shape (K, *grid.shape)
        Class probabilities, numpy or zarr; only the block's window is read.
    ids_out : array-like of int64, shape grid.shape
        Receives anchored ids in the block's core (zarr chunks aligned to the
        blocks let blocks run in parallel).
    grid : BlockGrid
    index : tuple of int
    instance_function : callable, optional
        ``f(probabilities_window, **options) -> int labels`` of the window's
        spatial shape; `instances_from_probabilities` by default.
    foreground_threshold : float, optional
        A window whose pixels are all at or below it (as ``1 - background``) is
        skipped; also passed on to the instance function.
    **options
        Further keyword arguments of the instance function.

    Returns
    -------
    BlockRecord
    """
    if instance_function is None:
        from workbench.predict._instances import instances_from_probabilities as instance_function
    window = grid.window(index)
    core = grid.core(index)
    empty = BlockRecord(index, np.zeros(0, np.int64), np.zeros((0, 1 + len(grid.shape)), np.int64), skipped=True)
    probs = np.asarray(probabilities[(slice(None),) + window], dtype=np.float32)
    if not has_foreground(probs, foreground_threshold):
        return empty
    local = np.asarray(instance_function(probs, foreground_threshold=foreground_threshold, **options))
    if local.shape != probs.shape[1:]:
        raise BlockwiseError(
            f"the instance function answered a window of shape {probs.shape[1:]} with labels of shape "
            f"{local.shape}; it must keep the spatial shape."
        )
    del probs
    offset = tuple(w.start for w in window)
    lut = _anchored(local, offset, grid.shape)
    core_local = _local_slices(core, window)
    core_ids = lut[local[core_local]]
    ids_out[core] = core_ids
    present_local = np.unique(local[core_local])
    present_local = present_local[present_local > 0]

    links = []
    if len(present_local):
        depth = ndi.distance_transform_edt(_interior(local))
        for other in grid.neighbours(index):
            other_core = grid.core(other)
            region = tuple(slice(max(c.start, w.start) - w.start, min(c.stop, w.stop) - w.start)
                           for c, w in zip(other_core, window))
            if any(r.stop <= r.start for r in region):
                continue
            sub = local[region]
            candidates = np.intersect1d(np.unique(sub), present_local)
            if not len(candidates):
                continue
            sub_depth = depth[region]
            deepest = ndi.maximum(sub_depth, sub, candidates)
            positions = ndi.maximum_position(sub_depth, sub, candidates)
            for label, value, position in zip(candidates, np.atleast_1d(deepest), positions):
                if value >= 1:
                    point = tuple(p + r.start + o for p, r, o in zip(position, region, offset))
                    links.append((lut[label], *point))
    ids = np.unique(core_ids)
    ids = ids[ids > 0]
    links_array = np.asarray(links, np.int64).reshape(-1, 1 + len(grid.shape))
    return BlockRecord(index, ids.astype(np.int64), links_array)


def _read_points(ids: Any, points: np.ndarray) -> np.ndarray:
    if not len(points):
        return np.zeros(0, np.int64)
    coords = tuple(points.T)
    if isinstance(ids, np.ndarray):
        return ids[coords]
    return np.asarray(ids.vindex[coords])


def merge_blocks(records: Iterable[BlockRecord], ids: Any) -> RelabelTable:
    """Merge ids that name the same object across faces and number the objects 1..N.

    Parameters
    ----------
    records : iterable of BlockRecord
        One per block, from `segment_block`.
    ids : array-like of int64
        The anchored ids written by all blocks (read only at the link points).

    Returns
    -------
    RelabelTable
        Final ids in raster order of each object's first anchor.
    """
    records = list(records)
    id_parts = [r.ids for r in records if len(r.ids)]
    anchored = np.unique(np.concatenate(id_parts)) if id_parts else np.zeros(0, np.int64)
    link_parts = [r.links for r in records if len(r.links)]
    n = len(anchored)
    merged = 0
    if link_parts and n:
        links = np.concatenate(link_parts)
        targets = _read_points(ids, links[:, 1:]).astype(np.int64)
        crossing = (targets > 0) & (targets != links[:, 0])
        pairs = np.unique(np.stack([links[crossing, 0], targets[crossing]], axis=1), axis=0)
        if len(pairs):
            # Mutual: (a, b) counts only when (b, a) was also seen; `pairs` is unique, so a pair
            # shows up twice in `both` exactly when its reverse is there too.
            both = np.concatenate([pairs, pairs[:, ::-1]])
            seen, counts = np.unique(both, axis=0, return_counts=True)
            mutual = seen[(counts == 2) & (seen[:, 0] < seen[:, 1])]
            if len(mutual):
                rows = np.searchsorted(anchored, mutual[:, 0])
                cols = np.searchsorted(anchored, mutual[:, 1])
                graph = coo_matrix((np.ones(len(mutual), np.int8), (rows, cols)), shape=(n, n))
                _, component = connected_components(graph, directed=False)
                merged = n - int(component.max()) - 1
            else:
                component = np.arange(n)
        else:
            component = np.arange(n)
    else:
        component = np.arange(n)
    # Components in order of their smallest anchor: `anchored` is sorted, so first occurrence.
    _, first = np.unique(component, return_index=True)
    rank = np.empty(len(first), np.int64)
    order = np.argsort(first, kind="stable")
    rank[np.unique(component)[order]] = np.arange(1, len(first) + 1)
    final = rank[component].astype(np.int32) if n else np.zeros(0, np.int32)
    return RelabelTable(anchored.astype(np.int64), final, merged)


def relabel_block(ids: Any, labels_out: Any, grid: BlockGrid, index: tuple[int, ...], table: RelabelTable) -> None:
    """Write the final int32 ids of one block's core."""
    core = grid.core(index)
    labels_out[core] = table.apply(np.asarray(ids[core]))


def _check_probabilities(probabilities: Any) -> tuple[int, ...]:
    shape = getattr(probabilities, "shape", None)
    if shape is None or len(shape) < 3:
        raise BlockwiseError(
            f"`probabilities` must be (K, Y, X) or (K, Z, Y, X), numpy or zarr; got "
            f"{type(probabilities).__name__} with shape {shape}."
        )
    return tuple(int(s) for s in shape[1:])


def blockwise_instances(
    probabilities: Any,
    out: Any = None,
    *,
    block_size: int | tuple[int, ...] = 1024,
    halo: int | tuple[int, ...] = 64,
    instance_function: InstanceFunction | None = None,
    ids: Any = None,
    foreground_threshold: float = 0.5,
    **options: Any,
) -> tuple[Any, BlockwiseSummary]:
    """Instance labels of a probability map of any size, block by block (serially, in this process).

    Parameters
    ----------
    probabilities : array-like, shape (K, Y, X) or (K, Z, Y, X)
        Class probabilities, numpy or zarr.
    out : array-like of int32, optional
        Where the final labels go (a zarr array keeps memory flat); a new numpy
        array by default.
    block_size : int or tuple of int, optional
        Core size of a block.
    halo : int or tuple of int, optional
        Context around each block; at least the extent of the largest object
        for results identical to whole-image post-processing.
    instance_function : callable, optional
        Per-window instance function (see `segment_block`).
    ids : array-like of int64, optional
        Scratch array for anchored ids (zarr for big images); numpy by default.
    foreground_threshold : float, optional
        As for `instances_from_probabilities`; also decides which blocks are empty.
    **options
        Further options of the instance function (``min_size`` ...).

    Returns
    -------
    labels : array-like of int32
        0 background, objects 1..N in raster order of their first pixel.
    summary : BlockwiseSummary
    """
    shape = _check_probabilities(probabilities)
    grid = BlockGrid.create(shape, block_size, halo)
    if ids is None:
        ids = np.zeros(shape, np.int64)
    if out is None:
        out = np.zeros(shape, np.int32)
    records = [segment_block(probabilities, ids, grid, index, instance_function=instance_function,
                             foreground_threshold=foreground_threshold, **options)
               for index in grid.indices()]
    table = merge_blocks(records, ids)
    for record in records:
        if not record.skipped:
            relabel_block(ids, out, grid, record.index, table)
    summary = BlockwiseSummary(objects=table.n_objects, blocks=grid.n_blocks,
                               skipped_empty=sum(r.skipped for r in records),
                               merged_across_faces=table.merged)
    return out, summary


# ---------------------------------------------------------------------- measurements
_COORDINATE_COLUMNS = {"centroid_y": 0, "centroid_x": 1, "bbox_y0": 0, "bbox_x0": 1, "bbox_y1": 0, "bbox_x1": 1}


def measure_block(
    labels: Any,
    grid: BlockGrid,
    index: tuple[int, ...],
    *,
    intensity: Any = None,
    pixel_size: tuple[float, float] | None = None,
):
    """Measure the objects whose bounding box starts in this block's core, on the block's window.

    Parameters
    ----------
    labels : array-like of int, shape grid.shape (Y, X)
        Final instance labels (numpy or zarr).
    grid : BlockGrid
        Its halo must cover the largest object for complete measurements.
    index : tuple of int
    intensity : array-like, shape (Y, X) or (C, Y, X), optional
    pixel_size : (float, float), optional

    Returns
    -------
    table : pandas.DataFrame
        As `measure_objects` without the neighbour columns, in image
        coordinates; column ``truncated`` is True for objects that reach the
        window's edge inside the image (wider than the halo).
    """
    from workbench.predict._measure import measure_objects

    if len(grid.shape) != 2:
        raise BlockwiseError(f"blockwise measurements take YX label images, got spatial shape {grid.shape}.")
    window = grid.window(index)
    core = grid.core(index)
    window_labels = np.asarray(labels[window])
    window_intensity = None
    if intensity is not None:
        window_intensity = np.asarray(intensity[window] if intensity.ndim == 2 else intensity[(slice(None),) + window])
        if window_intensity.ndim == 3 and len(window_intensity) == 1:
            window_intensity = window_intensity[0]
    offset = [w.start for w in window]
    # Measure only the objects this block owns (bounding box starting in its core): the others
    # belong to neighbours, and every shape and intensity property depends on the object's own
    # pixels alone, so blanking them changes nothing but the time.
    local, _, _ = relabel_sequential(window_labels)
    owned_local = [i + 1 for i, box in enumerate(ndi.find_objects(local)) if box is not None and all(
        c.start <= b.start + o < c.stop for b, c, o in zip(box, core, offset))]
    window_labels = np.where(np.isin(local, owned_local), window_labels, 0)
    del local
    table = measure_objects(window_labels, window_intensity, pixel_size=pixel_size, n_neighbours=0)
    for column, axis in _COORDINATE_COLUMNS.items():
        table[column] = table[column] + offset[axis]
    owned = ((table["bbox_y0"] >= core[0].start) & (table["bbox_y0"] < core[0].stop)
             & (table["bbox_x0"] >= core[1].start) & (table["bbox_x0"] < core[1].stop))
    table = table[owned].reset_index(drop=True)
    table["truncated"] = ((table["bbox_y1"] == window[0].stop) & (window[0].stop < grid.shape[0])) | (
        (table["bbox_x1"] == window[1].stop) & (window[1].stop < grid.shape[1]))
    drop = [c for c in table.columns if c.startswith("neighbour_distance") or c.startswith("centroid_") and c.endswith("_um")]
    table = table.drop(columns=drop)
    if pixel_size is not None:
        table["centroid_y_um"] = table["centroid_y"] * pixel_size[0]
        table["centroid_x_um"] = table["centroid_x"] * pixel_size[1]
    return table


def _chunked_mean_distance(points: np.ndarray, n_neighbours: int, chunk: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    n_points = len(points)
    if n_neighbours < 1 or n_points <= n_neighbours:
        return np.full(n_points, np.nan)
    tree = cKDTree(points)
    result = np.empty(n_points)
    for start in range(0, n_points, chunk):
        stop = min(start + chunk, n_points)
        distances, indices = tree.query(points[start:stop], k=n_neighbours + 1)
        # Drop each point itself by index, not by position (coinciding centroids), as measure_objects does.
        distances = np.where(indices == np.arange(start, stop)[:, None], np.inf, distances)
        result[start:stop] = np.sort(distances, axis=1)[:, :n_neighbours].mean(axis=1)
    return result


def neighbour_distances(centroids: np.ndarray, n_neighbours: int = 8,
                        pixel_size: tuple[float, float] | None = None, *, chunk: int = 65536) -> dict[str, np.ndarray]:
    """Mean distance of each centroid to its nearest others over the whole image (k-d tree).

    The tree holds every centroid (16 bytes an object); queries go ``chunk`` points at a
    time so the neighbour lists of a million objects are never held at once.

    Returns ``{"neighbour_distance_px": ...}`` and, with ``pixel_size``,
    ``neighbour_distance_um``; the same numbers `measure_objects` gives.
    """
    centroids = np.asarray(centroids, np.float64).reshape(-1, 2)
    result = {"neighbour_distance_px": _chunked_mean_distance(centroids, n_neighbours, chunk)}
    if pixel_size is not None:
        result["neighbour_distance_um"] = _chunked_mean_distance(centroids * np.asarray(pixel_size), n_neighbours,
                                                                 chunk)
    return result
