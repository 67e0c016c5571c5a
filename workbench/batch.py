"""Whole slides and whole experiments: many images, and images larger than memory, on dask.distributed.

`predict_batch` runs the whole product path (network, instances, measurements,
OME-Zarr) for every input, cut into blocks, in four stages over all images at
once, so a folder of small images and one huge slide parallelise the same way:

1. **network** per block: the block and a margin of context go through tiled
   prediction; the block's probabilities are written (chunks aligned to blocks);
2. **instances** per block: `segment_block` with a halo sized to the largest
   painted object; empty blocks are skipped; the driver then merges ids across
   faces (`merge_blocks`);
3. **finish** per block: final ids written, the block's objects measured;
   the driver adds nearest-neighbour distances over the whole image and writes
   the table;
4. **OME-Zarr**: image pyramid, labels and probabilities, chunk by chunk.

The same task functions run in this process (``scheduler="sync"``), on a
`distributed.LocalCluster` (``"local:N"``: N worker processes, one thread each)
or on an existing cluster (``"tcp://host:port"``, e.g. one started by
dask-jobqueue on SLURM or LSF; the project and the output folder must be on a
filesystem every worker sees).

Resuming: every image works in a hidden sibling ``.NAME.ome.zarr.partial``
beside its output, where each finished block leaves a marker written after its
data (atomically). A batch started again skips finished images (their
``NAME.ome.zarr`` exists: it appears by one rename when complete) and, inside
an unfinished image, the blocks already done. A partial folder made with
another model or other settings is started afresh.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench import config
from workbench.errors import WorkbenchError
from workbench.validate import whole_number

__all__ = ["BatchSettings", "ImageResult", "predict_batch", "parse_scheduler", "object_halo"]

Progress = Callable[[float, str], None]

# Below this many pixels in all, a batch runs in this process unless told otherwise:
# starting worker processes costs seconds that a small job does not win back.
SMALL_JOB_PIXELS = 4096 * 4096
TABLE_FORMATS = ("csv", "parquet")
_JOB_FILE = "job.json"
# Images are processed in groups of at least this many blocks (see `_groups`).
GROUP_BLOCKS = 64
_PARTIAL_SUFFIX = ".ome.zarr.partial"


@dataclass(frozen=True)
class BatchSettings:
    """How `predict_batch` cuts and processes the images.

    block_size : core edge of a block in pixels (also the chunk edge of every output)
    halo : context around a block for instances and measurements; None sizes it from the
        largest object painted in the project (`object_halo`)
    tile_size, overlap, tta, device, backend, model_version : as for `workbench predict`
    n_neighbours : neighbours averaged in the neighbour distance
    probabilities : also write the probabilities into the OME-Zarr
    table_format : "csv" or "parquet"
    """

    block_size: int = 1024
    halo: int | None = None
    tile_size: int | None = None
    overlap: float = 0.25
    tta: bool | None = None
    device: str | None = None
    backend: str = "torch"
    model_version: int | None = None
    n_neighbours: int = 8
    probabilities: bool = True
    table_format: str = "csv"

    def __post_init__(self) -> None:
        whole_number(self.block_size, "block_size", minimum=64)
        if self.halo is not None:
            whole_number(self.halo, "halo", minimum=0)
        if self.table_format not in TABLE_FORMATS:
            raise WorkbenchError(f"table format must be one of {', '.join(TABLE_FORMATS)}, got {self.table_format!r}")


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs for one image (plain values: it travels to other processes)."""

    project: str
    image: str
    in_project: bool
    axes: str | None
    name: str
    scratch: str
    model_version: int
    mode: str
    n_outputs: int
    spatial_shape: tuple[int, int]
    block: int
    halo: int
    margin: int
    tile_size: int | None
    overlap: float
    tta: bool
    device: str | None
    options: dict
    pixel_size: tuple[float, float] | None
    backend: str = "torch"

    @property
    def scratch_path(self) -> Path:
        return Path(self.scratch)

    def marker(self, stage: str, index: tuple[int, ...], suffix: str = "") -> Path:
        return self.scratch_path / "done" / f"{stage}-{'-'.join(map(str, index))}{suffix}"

    def grid(self, halo: int):
        from workbench.predict import BlockGrid

        return BlockGrid.create(self.spatial_shape, self.block, halo)

    def identity(self) -> dict:
        """What decides the result: a partial folder made for another identity is not resumed."""
        keep = ("project", "image", "axes", "model_version", "mode", "spatial_shape", "block", "halo", "margin",
                "tile_size", "overlap", "tta", "options", "backend")
        return json.loads(json.dumps({k: v for k, v in asdict(self).items() if k in keep}, default=list))


@dataclass
class ImageResult:
    """How one image of the batch went."""

    name: str
    output: str
    table: str | None
    status: str
    objects: int = 0
    blocks: int = 0
    skipped_empty: int = 0
    merged_across_faces: int = 0
    resumed_blocks: int = 0
    truncated: int = 0
    network_seconds: float = 0.0
    postprocess_seconds: float = 0.0
    write_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the command line."""
        if self.status != "done":
            return f"{self.name}: {self.status} ({self.output})"
        parts = [f"{self.objects} objects" if self.table else "classes", f"{self.blocks} blocks",
                 f"{self.skipped_empty} empty skipped", f"{self.merged_across_faces} merged across faces"]
        if self.resumed_blocks:
            parts.append(f"{self.resumed_blocks} block steps resumed")
        return f"{self.name}: " + ", ".join(parts) + f" -> {self.output}" + "".join(f"; {n}" for n in self.notes)


# ---------------------------------------------------------------------- per-process caches (workers)
_SEGMENTERS: dict[tuple, Any] = {}
_SOURCES: dict[tuple, Any] = {}
_TABLES: dict[str, Any] = {}


def _segmenter(project: str, version: int, device: str | None, backend: str = "torch"):
    key = (project, version, device, backend)
    if key not in _SEGMENTERS:
        from workbench.pipeline import load_segmenter
        from workbench.store import Project

        if config.threads() is not None:
            from workbench.deep import configure_cpu_threads

            configure_cpu_threads()
        _SEGMENTERS[key] = load_segmenter(Project.open(project), version, device=device, backend=backend)
    return _SEGMENTERS[key]


def _source(job: _Job):
    key = (job.project, job.image, job.in_project, job.axes)
    if key not in _SOURCES:
        from workbench.store import Project, open_image

        _SOURCES[key] = Project.open(job.project).image(job.image) if job.in_project else open_image(
            job.image, axes=job.axes)
    return _SOURCES[key]


def _read_window(job: _Job, window: tuple[slice, slice]) -> np.ndarray:
    source = _source(job)
    region = source[(slice(None),) + window] if source.axes == "CYX" else source[window][None]
    return np.asarray(region)


def _relabel_table(job: _Job):
    from workbench.predict import RelabelTable

    path = str(job.scratch_path / "relabel.npz")
    if path not in _TABLES:
        with np.load(path, allow_pickle=False) as data:
            _TABLES.clear()  # one image's table at a time per process
            _TABLES[path] = RelabelTable(data["anchored"], data["final"], int(data["merged"]))
    return _TABLES[path]


def _open(job: _Job, name: str):
    import zarr

    return zarr.open_array(str(job.scratch_path / name), mode="r+")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from workbench.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)


def _touch(path: Path) -> None:
    from workbench.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        Path(temporary).write_text("done\n")


# ---------------------------------------------------------------------- the block tasks
def _network_task(job: _Job, index: tuple[int, int]) -> tuple[float, bool]:
    """Probabilities of one block's core, predicted with a margin of context. Returns (seconds, resumed)."""
    marker = job.marker("network", index)
    if marker.exists():
        return 0.0, True
    from workbench.predict import predict_tiled

    start = time.perf_counter()
    segmenter = _segmenter(job.project, job.model_version, job.device, job.backend)
    grid = job.grid(job.margin)
    window, core = grid.window(index), grid.core(index)
    image = _read_window(job, window)
    if image.shape[0] != segmenter.in_channels:
        raise WorkbenchError(
            f"{job.name}: the model expects {segmenter.in_channels} channel(s) but the image has {image.shape[0]}; "
            "use a model trained on images with the same channels"
        )
    probabilities = predict_tiled(image, segmenter.predictor, segmenter.n_outputs,
                                  tile_size=job.tile_size or segmenter.tile_size, overlap=job.overlap,
                                  halo=segmenter.halo, tta=job.tta)
    local = tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(core, window))
    _open(job, "probabilities.zarr")[(slice(None),) + core] = probabilities[(slice(None),) + local]
    _touch(marker)
    return time.perf_counter() - start, False


def _instances_task(job: _Job, index: tuple[int, int]):
    """Instances (or classes) of one block. Returns (BlockRecord, seconds, resumed)."""
    from workbench.predict import BlockRecord, segment_block, semantic_from_probabilities

    marker = job.marker("instances", index, ".npz")
    if marker.exists():
        with np.load(marker, allow_pickle=False) as data:
            return BlockRecord.from_arrays(data), 0.0, True
    start = time.perf_counter()
    probabilities = _open(job, "probabilities.zarr")
    grid = job.grid(job.halo)
    if job.mode == "instance":
        from workbench.pipeline import postprocess

        def instance_function(window, **options):
            return postprocess(window, "instance", **options)

        record = segment_block(probabilities, _open(job, "ids.zarr"), grid, index,
                               instance_function=instance_function, **job.options)
    else:
        core = grid.core(index)
        _open(job, "labels.zarr")[core] = semantic_from_probabilities(probabilities[(slice(None),) + core])
        record = BlockRecord(index, np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
    _save_npz(marker, **record.to_arrays())
    return record, time.perf_counter() - start, False


class _RelabelledView:
    """Final ids of any region, read from the anchored ids and the relabel table."""

    def __init__(self, ids, table):
        self.ids, self.table = ids, table
        self.shape, self.ndim = tuple(ids.shape), len(ids.shape)

    def __getitem__(self, key):
        return self.table.apply(np.asarray(self.ids[key]))


def _finish_task(job: _Job, index: tuple[int, int], skipped: bool) -> tuple[float, bool]:
    """Final ids of one block and the measurements of the objects it owns. Returns (seconds, resumed)."""
    from workbench.predict import measure_block, relabel_block
    from workbench.store import atomic_write

    part = job.marker("finish", index, ".parquet")
    if part.exists():
        return 0.0, True
    start = time.perf_counter()
    if not skipped and job.mode == "instance":
        table = _relabel_table(job)
        ids = _open(job, "ids.zarr")
        grid = job.grid(job.halo)
        relabel_block(ids, _open(job, "labels.zarr"), grid, index, table)
        intensity = _IntensityView(job)
        rows = measure_block(_RelabelledView(ids, table), grid, index, intensity=intensity,
                             pixel_size=job.pixel_size)
    else:
        import pandas as pd

        rows = pd.DataFrame()
    part.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(part) as temporary:
        rows.to_parquet(temporary, index=False)
    return time.perf_counter() - start, False


class _IntensityView:
    """The input image as (C, Y, X), read region by region, for the measurements."""

    def __init__(self, job: _Job):
        self.job = job
        source = _source(job)
        self.ndim = 3
        self.shape = (source.n_channels,) + tuple(source.spatial_shape)

    def __getitem__(self, key):
        return _read_window(self.job, tuple(key[1:]))


# ---------------------------------------------------------------------- running tasks
def _named(function: Callable, job: _Job, *args: Any) -> tuple:
    """Run a block task and add its image's name to what it returns (results arrive in any order)."""
    return (*function(job, *args), job.name)


class _SerialRunner:
    """Runs tasks one after another in this process."""

    name = "this process"

    def map(self, function: Callable, items: Sequence[tuple]) -> Iterator[Any]:
        for item in items:
            yield function(*item)

    def close(self) -> None:
        pass


class _DaskRunner:
    """Runs tasks on a dask.distributed cluster and yields results as they finish."""

    def __init__(self, client, cluster=None, name: str = ""):
        self.client, self.cluster, self.name = client, cluster, name

    def map(self, function: Callable, items: Sequence[tuple]) -> Iterator[Any]:
        from distributed import as_completed

        futures = [self.client.submit(function, *item, pure=False) for item in items]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.release()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def parse_scheduler(text: str | None) -> tuple[str, int | str | None]:
    """``None``/"auto", "sync", "local" / "local:N" or "tcp://host:port" -> (kind, value)."""
    if text is None or text == "auto":
        return "auto", None
    if text == "sync":
        return "sync", None
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2] or str(os.cpu_count() or 1)
        if not count.isdigit() or int(count) < 1:
            raise WorkbenchError(f"--scheduler local:N needs a number of workers >= 1, got {text!r}")
        return "local", int(count)
    if "://" in text:
        return "address", text
    raise WorkbenchError(
        f"unknown scheduler {text!r}; use sync, local:N (N worker processes here) or the address of a "
        "running dask scheduler such as tcp://host:8786"
    )


# glibc's malloc options (mallopt): freed memory above this at the top of a heap goes back to the
# system, and blocks of at least `_MMAP_THRESHOLD` bytes are mapped on their own (and unmapped when
# freed). dask's nanny starts every worker process with MALLOC_TRIM_THRESHOLD_=65536 for the same reason.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD = 65536
_MMAP_THRESHOLD = 128 * 1024  # glibc's default, before its dynamic threshold raises it


def _return_freed_memory() -> bool:
    """Make this process give freed memory back to the system (glibc only; a no-op elsewhere).

    By default glibc raises its mmap threshold each time a big block is freed, up to 32 MiB, so the
    block-sized arrays of every block (the decoded zarr chunks, the window's probabilities and
    watershed arrays) then come from malloc's heaps, many from the per-thread arenas of zarr's
    decoding threads and dask's threads; freed, they stay resident (malloc_trim does not get
    them back). Over the blocks of a slide these heaps grow with the blocks seen (about +200 MB
    over the 64 blocks of an 8k² slide while the live memory stays flat), which was most of the
    growth of a batch's peak with the slide. Setting the trim threshold turns the dynamic
    threshold off, as the environment variable does for dask's workers; the mmap threshold is
    set back to glibc's default in case it was already raised. The settings are process-wide
    and stay; a user's own MALLOC_*_ / GLIBC_TUNABLES settings are left as they are. Returns
    whether they were set.
    """
    import sys

    if not sys.platform.startswith("linux") or any(
            name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" for name in os.environ):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # glibc answers 1 for success; musl's mallopt is a stub that answers 0.
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))


@contextlib.contextmanager
def _runner(scheduler: str | None, total_pixels: int, n_images: int):
    kind, value = parse_scheduler(scheduler)
    if kind == "auto":
        kind, value = ("sync", None) if total_pixels <= SMALL_JOB_PIXELS or (os.cpu_count() or 1) == 1 else (
            "local", os.cpu_count())
    if kind == "sync":
        # The blocks run here: without this, freed block arrays stay resident and the peak grows
        # with the slide (worker processes get the same setting from dask's nanny).
        _return_freed_memory()
        runner = _SerialRunner()
    else:
        from distributed import Client, LocalCluster

        # One thread per worker process: torch and the watershed then use one core each.
        if kind == "local":
            cluster = LocalCluster(n_workers=int(value), threads_per_worker=1, processes=True,
                                   dashboard_address=None, env={"WORKBENCH_THREADS": "1", "OMP_NUM_THREADS": "1"})
            runner = _DaskRunner(Client(cluster), cluster, name=f"a local cluster of {value} worker processes")
        else:
            try:
                client = Client(value, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise WorkbenchError(f"cannot reach the dask scheduler at {value} ({error}); start it first "
                                     "(dask scheduler / dask-jobqueue) or use --scheduler local:N") from error
            runner = _DaskRunner(client, name=f"the dask cluster at {value}")
    try:
        yield runner
    finally:
        runner.close()


# ---------------------------------------------------------------------- the driver
def object_halo(project) -> int:
    """A halo that holds the largest object painted in the project: 1.5 x its extent, at least 32 px."""
    from scipy import ndimage as ndi

    from workbench.store import painted_objects

    extent = 0
    for name in project.image_names:
        labels = project.labels(name)[...]
        for plane in labels if labels.ndim == 3 else [labels]:
            objects, count = painted_objects(plane)
            if count:
                extent = max([extent] + [max(s.stop - s.start for s in box)
                                         for box in ndi.find_objects(objects) if box is not None])
    return max(32, int(math.ceil(1.5 * extent / 8)) * 8)


def _output_stem(reference: str, in_project: bool) -> str:
    if in_project:
        return reference
    name = Path(reference).name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif", ".npy", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _plan(project, inputs: Sequence[str], out_dir: Path, settings: BatchSettings, segmenter, options: dict,
          halo: int) -> list[tuple[_Job, Path, Path | None]]:
    from workbench.store import open_image

    jobs, seen = [], {}
    for reference in inputs:
        reference = str(reference)
        in_project = reference in project.image_names
        if in_project:
            source = project.image(reference)
            pixel_size = project.image_info(reference).pixel_size
        else:
            if not Path(reference).exists():
                raise WorkbenchError(f"input {reference!r} is neither an image of the project nor an existing file")
            source = open_image(reference)
            pixel_size = source.pixel_size
            reference = str(Path(reference).resolve())
        if "Z" in source.axes:
            raise WorkbenchError(
                f"{reference}: z-stacks are not yet supported by the blockwise batch engine; segment them "
                f"plane by plane with `workbench predict {project.path} IMAGE --out FILE`"
            )
        stem = _output_stem(reference, in_project)
        if stem in seen:
            raise WorkbenchError(f"inputs {seen[stem]!r} and {reference!r} would both write {stem}.ome.zarr; "
                                 "rename one or run them into different --out folders")
        seen[stem] = reference
        margin = max(32, int(round((settings.overlap if settings.overlap < 1 else 0) * (
            settings.tile_size or segmenter.tile_size))))
        job = _Job(
            project=str(project.path), image=reference, in_project=in_project, axes=None, name=stem,
            scratch=str(out_dir / f".{stem}{_PARTIAL_SUFFIX}"), model_version=int(segmenter.record.version),
            mode=project.mode, n_outputs=int(segmenter.n_outputs), spatial_shape=tuple(source.spatial_shape),
            block=settings.block_size, halo=halo, margin=margin + int(segmenter.halo), tile_size=settings.tile_size,
            overlap=settings.overlap, tta=segmenter.default_tta if settings.tta is None else settings.tta,
            device=settings.device, options=dict(options),
            pixel_size=tuple(pixel_size) if pixel_size else None, backend=settings.backend,
        )
        table = out_dir / f"{stem}.{settings.table_format}" if project.mode == "instance" else None
        jobs.append((job, out_dir / f"{stem}.ome.zarr", table))
    return jobs


def _prepare_scratch(job: _Job) -> None:
    """Create the job's partial folder, or keep it for resuming when it was made for the same job."""
    import zarr

    scratch = job.scratch_path
    job_file = scratch / _JOB_FILE
    if scratch.exists():
        try:
            same = json.loads(job_file.read_text()) == job.identity()
        except (OSError, ValueError):
            same = False
        if same:
            return
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    block = job.block
    chunks = tuple(min(block, s) for s in job.spatial_shape)
    zarr.create_array(str(scratch / "probabilities.zarr"), shape=(job.n_outputs, *job.spatial_shape),
                      chunks=(job.n_outputs, *chunks), dtype="float32", fill_value=0.0)
    if job.mode == "instance":
        zarr.create_array(str(scratch / "ids.zarr"), shape=job.spatial_shape, chunks=chunks, dtype="int64",
                          fill_value=0)
    zarr.create_array(str(scratch / "labels.zarr"), shape=job.spatial_shape, chunks=chunks,
                      dtype="int32" if job.mode == "instance" else "uint8", fill_value=0)
    from workbench.store import write_json_atomic

    # Written last: a folder without it is never taken for a resumable one.
    write_json_atomic(job_file, job.identity())


def _write_table(job: _Job, grid, table_path: Path, n_neighbours: int, table_format: str) -> int:
    """Stream the block parts into one table with whole-image neighbour distances, atomically.

    Only the centroids of all objects are held at once (for the k-d tree); rows go to the
    file part by part. Returns how many objects were wider than the halo.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.predict import neighbour_distances
    from workbench.store import atomic_write

    parts = [p for p in (job.marker("finish", index, ".parquet") for index in grid.indices())
             if pq.read_metadata(p).num_rows]
    centroids = [pq.read_table(p, columns=["centroid_y", "centroid_x"]).to_pandas().to_numpy() for p in parts]
    centroids = np.concatenate(centroids) if centroids else np.zeros((0, 2))
    distances = neighbour_distances(centroids, n_neighbours, job.pixel_size)
    del centroids
    start, truncated, writer = 0, 0, None
    with atomic_write(table_path) as temporary:
        for p in parts:
            rows = pd.read_parquet(p)
            for column, values in distances.items():
                rows[column] = values[start : start + len(rows)]
            start += len(rows)
            truncated += int(rows["truncated"].sum())
            rows.insert(0, "image", job.name)
            if table_format == "csv":
                rows.to_csv(temporary, mode="w" if writer is None else "a", header=writer is None, index=False)
                writer = True
            else:
                batch = pa.Table.from_pandas(rows, preserve_index=False)
                writer = writer or pq.ParquetWriter(temporary, batch.schema)
                writer.write_table(batch)
        if writer is None:  # no object at all: a table with its header
            pd.DataFrame(columns=["image", "label"]).to_csv(temporary, index=False) if table_format == "csv" else \
                pd.DataFrame(columns=["image", "label"]).to_parquet(temporary, index=False)
        elif table_format != "csv":
            writer.close()
    return truncated


def _read_chunk(job: _Job, dtype: str, block_info=None) -> np.ndarray:
    location = block_info[None]["array-location"]
    return _read_window(job, (slice(*location[1]), slice(*location[2]))).astype(dtype, copy=False)


def _lazy_image(job: _Job, chunk: int):
    """The input image as a dask array (C, Y, X) read chunk by chunk by whoever computes it.

    The task carries only the job (plain values), so it travels to worker processes, which
    open the image themselves.
    """
    import functools

    import dask.array as da

    source = _source(job)
    shape = (source.n_channels,) + tuple(source.spatial_shape)
    chunks = (shape[0],) + tuple(min(chunk, s) for s in shape[1:])
    dtype = np.dtype(source.dtype)
    return da.map_blocks(functools.partial(_read_chunk, job, dtype.str), chunks=da.core.normalize_chunks(chunks, shape),
                         dtype=dtype, meta=np.zeros((0, 0, 0), dtype))


def _write_container(job: _Job, project, final: Path, with_probabilities: bool) -> None:
    import dask.array as da
    import zarr

    from workbench.conventions import probability_names
    from workbench.pipeline import _label_layers
    from workbench.store._omezarr import write_ome_zarr

    container = job.scratch_path / "result.ome.zarr"
    if container.exists():
        shutil.rmtree(container)  # a container half-written by a killed run
    labels = da.from_zarr(zarr.open_array(str(job.scratch_path / "labels.zarr"), mode="r"))
    layers = _label_layers(project, labels)
    probabilities = da.from_zarr(zarr.open_array(str(job.scratch_path / "probabilities.zarr"), mode="r")) \
        if with_probabilities else None
    write_ome_zarr(container, _lazy_image(job, job.block), image_axes="cyx", labels=layers,
                   probabilities=probabilities,
                   probability_names=None if probabilities is None else probability_names(
                       project.mode, project.class_names, probabilities.shape[0]),
                   pixel_size=job.pixel_size, chunk=job.block, name=job.name)
    os.rename(container, final)


def _groups(todo: list) -> Iterator[list]:
    """Images in groups of at least `GROUP_BLOCKS` blocks: enough work to keep every worker busy,
    and each group's outputs are finished before the next starts, so a long batch delivers
    images as it goes instead of all at the end."""
    group, blocks = [], 0
    for item in todo:
        group.append(item)
        blocks += item[0].grid(item[0].halo).n_blocks
        if blocks >= GROUP_BLOCKS:
            yield group
            group, blocks = [], 0
    if group:
        yield group


def _run_group(runner, group: list, results: dict[str, ImageResult], step: Callable[[str], None], project,
               settings: BatchSettings) -> None:
    """The four stages for a group of images; results come back in completion order, named."""
    import zarr

    from workbench.predict import merge_blocks

    tasks = [(job, index) for job, _, _ in group for index in job.grid(job.halo).indices()]
    for seconds, resumed, name in runner.map(_named, [(_network_task, *t) for t in tasks]):
        results[name].network_seconds += seconds
        results[name].resumed_blocks += int(resumed)
        step(f"{name}: network")
    records: dict[str, list] = {job.name: [] for job, _, _ in group}
    for record, seconds, resumed, name in runner.map(_named, [(_instances_task, *t) for t in tasks]):
        records[name].append(record)
        results[name].postprocess_seconds += seconds
        results[name].resumed_blocks += int(resumed)
        results[name].skipped_empty += int(record.skipped)
        step(f"{name}: instances")
    for job, _, _ in group:
        if job.mode == "instance":
            table = merge_blocks(records[job.name], zarr.open_array(str(job.scratch_path / "ids.zarr"), mode="r"))
            _save_npz(job.scratch_path / "relabel.npz", anchored=table.anchored, final=table.final,
                      merged=np.asarray(table.merged))
            results[job.name].objects = table.n_objects
            results[job.name].merged_across_faces = table.merged
            del table  # the finish tasks read it back from relabel.npz
    skipped = {(job.name, r.index): r.skipped for job, _, _ in group for r in records[job.name]}
    del records  # every object's anchored id and links: not needed past the merge
    finish = [(_finish_task, job, index, skipped[(job.name, index)]) for job, index in tasks]
    for seconds, resumed, name in runner.map(_named, finish):
        results[name].postprocess_seconds += seconds
        results[name].resumed_blocks += int(resumed)
        step(f"{name}: measured")
    _TABLES.clear()  # this process's copy of the last relabel table (sync), not needed for writing
    for job, final, table in group:
        result = results[job.name]
        start = time.perf_counter()
        if table is not None:
            result.truncated = _write_table(job, job.grid(job.halo), table, settings.n_neighbours,
                                            settings.table_format)
            if result.truncated:
                result.notes.append(f"{result.truncated} objects are wider than the halo ({job.halo} px) "
                                    "and were measured in part; rerun with a larger --halo")
        _write_container(job, project, final, settings.probabilities)
        shutil.rmtree(job.scratch_path, ignore_errors=True)
        result.write_seconds = time.perf_counter() - start
        step(f"{job.name}: written")


def predict_batch(
    project,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    settings: BatchSettings | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> list[ImageResult]:
    """Segment and measure many images, of any size, block by block, into OME-Zarr files and tables.

    Parameters
    ----------
    project : workbench.store.Project
        Supplies the model (latest by default), the mode, classes and instance settings.
    inputs : iterable of str or path
        Image files / Zarr folders, or names of project images.
    out_dir : path
        Output folder (created): ``NAME.ome.zarr`` per input (image, ``labels/instances``
        and ``labels/classes``, ``probabilities``) and, in instance mode, ``NAME.csv``
        (or ``.parquet``) with one row per object.
    settings : BatchSettings, optional
    scheduler : str, optional
        ``"sync"`` (this process), ``"local:N"`` (a LocalCluster of N processes),
        ``"tcp://host:port"`` (a running cluster); by default this process for small
        jobs and a LocalCluster with one worker per core for big ones.
    progress : callable, optional
        ``progress(fraction, message)`` over the whole job.

    Returns
    -------
    list of ImageResult
        One per input, in input order.

    Raises
    ------
    WorkbenchError
        For a missing input, clashing output names, z-stacks, or an unreachable scheduler.
    """
    from workbench.pipeline import instance_options

    settings = settings or BatchSettings()
    parse_scheduler(scheduler)  # a mistyped scheduler fails before any work
    inputs = [str(i) for i in inputs]
    if not inputs:
        raise WorkbenchError("give at least one image to predict")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise WorkbenchError(f"--out {out_dir} is a file; the batch writes a folder of OME-Zarr images there")
    out_dir.mkdir(parents=True, exist_ok=True)
    segmenter = _segmenter(str(project.path), project.model_record(settings.model_version).version,
                           settings.device, settings.backend)
    options = instance_options(project, segmenter=segmenter) if project.mode == "instance" else {}
    halo = settings.halo if settings.halo is not None else object_halo(project)
    planned = _plan(project, inputs, out_dir, settings, segmenter, options, halo)

    results: dict[str, ImageResult] = {}
    todo = []
    for job, final, table in planned:
        if final.exists():
            results[job.name] = ImageResult(job.name, str(final), str(table) if table else None,
                                            "already finished, skipped")
        else:
            _prepare_scratch(job)
            grid = job.grid(job.halo)
            results[job.name] = ImageResult(job.name, str(final), str(table) if table else None, "done",
                                            blocks=grid.n_blocks)
            todo.append((job, final, table))

    total_steps = sum(3 * results[job.name].blocks + 1 for job, _, _ in todo) or 1
    done_steps = 0

    def step(message: str) -> None:
        nonlocal done_steps
        done_steps += 1
        if progress:
            progress(done_steps / total_steps, message)

    total_pixels = sum(math.prod(job.spatial_shape) for job, _, _ in todo)
    if todo:
        with _runner(scheduler, total_pixels, len(todo)) as runner:
            for group in _groups(todo):
                _run_group(runner, group, results, step, project, settings)
    if progress:
        progress(1.0, "done")
    return [results[job.name] for job, _, _ in planned]
