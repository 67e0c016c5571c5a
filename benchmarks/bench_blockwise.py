"""Whole-slide benchmarks of the batch engine (`workbench.batch.predict_batch`).

Two measurements, each in fresh child processes so that peak memory belongs to one run:

``scaling``
    Peak memory and time of the product path after the network (blockwise instances,
    measurements with whole-image neighbour distances, OME-Zarr image + labels +
    probabilities) on synthetic slides from 2k² to 32k² made by tiling the synthetic
    nuclei generator (``workbench.datasets.hard_nuclei``, 16 different 1024² tiles, ~1.4
    thousand nuclei each). The probabilities a network would give are derived from the
    generator's ground truth and written where the batch keeps them, with every
    block's network step marked done, so the batch resumes after the network: the
    network's own memory is one block and does not grow with the slide.

``throughput``
    The whole path including the network (a Random Forest trained on the bundled
    sample) on one synthetic slide, with 1 and 2 worker processes (LocalCluster), and
    the time share of post-processing versus the network.

Usage::

    python -m benchmarks.bench_blockwise throughput --size 2048
    python -m benchmarks.bench_blockwise scaling --sizes 2048,4096,8192,16384,32768

Results are appended, one JSON line per run, to ``benchmarks/_work/blockwise/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

WORK = BENCH_DIR / "_work" / "blockwise"
TILE = 1024
VARIANTS = 16
HALO = 64
BLOCK = 1024


def _peak_rss_mb() -> float:
    # VmHWM, as the other benchmarks: ru_maxrss may carry the parent's peak across fork + exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _project():
    """The bundled sample project with a forest: the model, classes and instance settings of the runs."""
    from workbench.datasets._sample import build_sample_project
    from workbench.pipeline import train_model

    path = WORK / "project"
    project = build_sample_project(path)
    if not project.models:
        train_model(project, method="forest")
    return project


def _tiles():
    """16 synthetic 1024² tiles: image (uint16) and three-class probabilities from their ground truth."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from workbench.datasets import hard_nuclei

    cache = WORK / "tiles.npz"
    WORK.mkdir(parents=True, exist_ok=True)
    if cache.exists():
        with np.load(cache) as data:
            return data["images"], data["probabilities"], data["counts"]
    images, probabilities, counts = [], [], []
    for seed in range(VARIANTS):
        image, labels = hard_nuclei((TILE, TILE), seed=seed)
        foreground = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0)
        boundary = np.minimum(ndi.gaussian_filter(find_boundaries(labels, mode="inner").astype(np.float32), 0.7) * 1.8,
                              foreground)
        boundary = np.clip(boundary, 0, 1)
        images.append(image.astype(np.uint16))
        probabilities.append(np.stack([1 - foreground, foreground - boundary, boundary]).astype(np.float16))
        counts.append(len(np.unique(labels)) - 1)
    np.savez(cache, images=np.stack(images), probabilities=np.stack(probabilities), counts=np.array(counts))
    return np.stack(images), np.stack(probabilities), np.array(counts)


def _variant(i: int, j: int) -> int:
    return (7 * i + 3 * j) % VARIANTS


def _make_slide(size: int, with_probabilities: bool) -> dict:
    """Write a size² slide (zarr) and, optionally, its probabilities into the batch's scratch folder."""
    import zarr

    from workbench.batch import BatchSettings, _plan, _prepare_scratch, _segmenter, _touch
    from workbench.pipeline import instance_options

    images, probabilities, counts = _tiles()
    folder = WORK / f"slide_{size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    image = zarr.create_array(str(folder / "slide.zarr"), shape=(size, size), chunks=(TILE, TILE), dtype="uint16")
    n = size // TILE
    for i in range(n):
        for j in range(n):
            image[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE] = images[_variant(i, j)]
    nuclei = int(sum(counts[_variant(i, j)] for i in range(n) for j in range(n)))
    if with_probabilities:
        project = _project()
        settings = BatchSettings(block_size=BLOCK, halo=HALO)
        segmenter = _segmenter(str(project.path), project.model_record().version, None)
        (job, _, _), = _plan(project, [str(folder / "slide.zarr")], folder / "out", settings, segmenter,
                             instance_options(project), HALO)
        (folder / "out").mkdir()
        _prepare_scratch(job)
        target = zarr.open_array(str(job.scratch_path / "probabilities.zarr"), mode="r+")
        for i in range(n):
            for j in range(n):
                target[:, i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE] = \
                    probabilities[_variant(i, j)].astype(np.float32)
        for index in job.grid(job.halo).indices():
            _touch(job.marker("network", index))
    return {"slide": str(folder / "slide.zarr"), "nuclei": nuclei}


def _run_batch(size: int, scheduler: str) -> dict:
    from workbench.batch import BatchSettings, predict_batch

    project = _project()
    folder = WORK / f"slide_{size}"
    start = time.perf_counter()
    (result,) = predict_batch(project, [str(folder / "slide.zarr")], folder / "out",
                              settings=BatchSettings(block_size=BLOCK, halo=HALO), scheduler=scheduler)
    seconds = time.perf_counter() - start
    return {"size": size, "scheduler": scheduler, "seconds": round(seconds, 1), "objects": result.objects,
            "blocks": result.blocks, "skipped_empty": result.skipped_empty,
            "merged_across_faces": result.merged_across_faces, "resumed_block_steps": result.resumed_blocks,
            "network_task_s": round(result.network_seconds, 1),
            "postprocess_task_s": round(result.postprocess_seconds, 1),
            "write_s": round(result.write_seconds, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
            # CPU time of this process (workers' not included): on a shared machine the honest clock.
            "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
            "megapixels_per_s": round(size * size / 1e6 / seconds, 3)}


def _child(argv: list[str]) -> dict:
    # A module of the benchmarks package, as run_all runs it: no sys.path edits.
    output = subprocess.run([sys.executable, "-m", "benchmarks.bench_blockwise", *argv], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _record(row: dict) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "results.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scaling")
    p.add_argument("--sizes", default="2048,4096,8192,16384,32768")
    p = sub.add_parser("throughput")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--workers", default="1,2")
    p = sub.add_parser("_make")
    p.add_argument("size", type=int)
    p.add_argument("--probabilities", action="store_true")
    p = sub.add_parser("_batch")
    p.add_argument("size", type=int)
    p.add_argument("scheduler")
    args = parser.parse_args(argv)
    if args.command == "_make":
        print(json.dumps(_make_slide(args.size, args.probabilities)))
    elif args.command == "_batch":
        print(json.dumps(_run_batch(args.size, args.scheduler)))
    elif args.command == "scaling":
        for size in (int(s) for s in args.sizes.split(",")):
            made = _child(["_make", str(size), "--probabilities"])
            row = _child(["_batch", str(size), "sync"])
            _record({"benchmark": "scaling (after the network)", **row, "nuclei_in_truth": made["nuclei"]})
            shutil.rmtree(WORK / f"slide_{size}", ignore_errors=True)
    else:
        _child(["_make", str(args.size)])
        for workers in args.workers.split(","):
            shutil.rmtree(WORK / f"slide_{args.size}" / "out", ignore_errors=True)
            row = _child(["_batch", str(args.size), f"local:{workers}"])
            row["post_share"] = round(row["postprocess_task_s"] / (row["postprocess_task_s"] + row["network_task_s"]), 3)
            _record({"benchmark": "throughput (whole path, forest)", "workers": int(workers), **row})


if __name__ == "__main__":
    main()
