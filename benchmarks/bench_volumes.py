"""Z-stacks as volumes: 3-D instance accuracy from partial labels, and time / memory on a large volume.

Accuracy: the real StarDist nuclei volume (``shared/data/stardist_nuclei_3d``,
31 x 61 x 57, 51 nuclei). Simulated partial labels on the left half (a minority
of the whole nuclei lying there, painted through the stack, plus background
strokes on every plane); scored on the right half, which training never sees.
For three label draws (each also the training seed), a 2-D U-Net and a forest
(trained on every annotated plane, 3-D boundary targets) are run through

* the product's 3-D path: one watershed through the stack seeded by the painted
  objects' shape, foreground threshold chosen on the painted objects
  (`pipeline.volume_instance_options`),
* the boundary-seeded 3-D watershed of before, on the same probabilities, and
* per-plane instances (one set per plane, as before volumes existed),

all scored with the 2018 DSB matching in 3-D (a per-plane result gets a new id
per plane, so a nucleus over ten planes is ten objects); the mean per-plane 2-D
AP of the per-plane path is given as well.

Scale: ``nuclei_volume`` generates a synthetic volume; the 3-D
post-processing (3-D boundaries, seeded watershed, measurements) is timed on
its stored probabilities with the peak memory (RSS) of a fresh process.

Run alone: ``python -m benchmarks.bench_volumes [--quick] [--epochs N] [--large Z,Y,X]``; prints
markdown (``run_all.py`` includes it as the ``volumes`` section).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import SHARED_DIR, markdown_table

VOLUME_DIR = SHARED_DIR / "data" / "stardist_nuclei_3d"
TRAIN_REGION = np.s_[:, :, :28]
TEST_REGION = np.s_[:, :, 28:]
AP50_GOAL = 0.70


def volume_task(object_fraction: float, seed: int = 0):
    """Image, ground truth and simulated partial labels (left half) of the real nuclei volume."""
    import tifffile

    from workbench.datasets import simulate_partial_labels

    image = tifffile.imread(VOLUME_DIR / "image.tif")
    gt = tifffile.imread(VOLUME_DIR / "labels.tif").astype(np.int32)
    labels = simulate_partial_labels(gt, object_fraction=object_fraction, region=TRAIN_REGION, seed=seed,
                                     stroke_width=3, stroke_length=40)
    return image, gt, labels


def score(gt: np.ndarray, pred: np.ndarray) -> dict:
    """3-D AP on the test half; a per-plane prediction gets one id per (plane, object)."""
    from workbench.predict import average_precision

    scores = average_precision(gt[TEST_REGION], pred[TEST_REGION])
    return {"ap50": scores["ap50"], "map": scores["map"], "n_gt": scores["n_gt"], "n_pred": scores["n_pred"]}


def planes_as_objects(per_plane: np.ndarray) -> np.ndarray:
    """Give every (plane, id) of a per-plane result its own id, as a 3-D reader of it would see."""
    out = per_plane.astype(np.int64)
    offset = 0
    for z in range(out.shape[0]):
        plane = out[z]
        plane[plane > 0] += offset
        offset = max(offset, int(plane.max(initial=0)))
    return out


def mean_plane_ap(gt: np.ndarray, pred: np.ndarray) -> float:
    from workbench.predict import average_precision

    values = [average_precision(g, p)["ap50"] for g, p in zip(gt[TEST_REGION], pred[TEST_REGION]) if g.any() or p.any()]
    return float(np.mean(values)) if values else float("nan")


def train_project(folder: Path, image, labels, boundaries: str, epochs: int, boundary_width: int, seed: int,
                  method: str = "unet"):
    """A project on the volume with `labels`, trained for `epochs` (of 10 steps), predicted; returns its instances.

    Epochs, not minutes: optimiser steps, so the result does not depend on how busy the CPU is."""
    from workbench import pipeline
    from workbench.store import Project

    project = Project.create(folder, mode="instance", classes=["background", "nucleus"],
                             boundary_width=boundary_width)
    project.update_settings(boundaries=boundaries)
    name = project.add_image(image, name="nuclei3d", axes="ZYX")
    project.import_labels(name, labels)
    started = time.perf_counter()
    settings = ({"minutes": None, "epochs": epochs, "seed": seed, "patch_size": 64} if method == "unet"
                else {"seed": seed})
    record = pipeline.train_model(project, method=method, settings=settings)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    pipeline.predict_project(project)
    predict_s = time.perf_counter() - started
    return project, project.prediction(name, "instances")[...], record, train_s, predict_s


def accuracy_rows(epochs: int, object_fraction: float, boundary_width: int, seeds=(0, 1, 2),
                  methods=("unet", "forest")) -> tuple[list, dict]:
    """Per label draw and training seed (the same number), per method: the product's 3-D instances
    (shape seeds, threshold chosen on the painted objects), the boundary-seeded 3-D watershed of
    before on the same probabilities, and per-plane instances; with the means over the draws."""
    from workbench import pipeline
    from workbench.datasets import labelled_fraction
    from workbench.store import painted_objects

    rows, info = [], {"draws": []}
    for seed in seeds:
        image, gt, labels = volume_task(object_fraction, seed)
        info["n_nuclei"] = int(len(np.unique(gt)) - 1)
        info["draws"].append({"seed": seed, "painted": painted_objects(labels)[1],
                              "labelled_fraction": labelled_fraction(labels, TRAIN_REGION)})
        for method in methods:
            with tempfile.TemporaryDirectory(prefix="bench-volumes-") as tmp:
                project, pred, record, train_s, predict_s = train_project(Path(tmp) / "p", image, labels, "3d",
                                                                          epochs, boundary_width, seed, method)
                segmenter = pipeline.load_segmenter(project)
                chosen = pipeline.volume_instance_options(project, segmenter)
                common = {"method": method, "draw": seed, "train_s": round(train_s, 1),
                          "steps": record.metrics.get("steps") if method == "unet" else None}
                rows.append({"path": "3-D, shape seeds (product default)", **score(gt, pred),
                             "z_scale": chosen.get("spacing", (None,))[0],
                             "foreground": chosen.get("foreground_threshold"), "predict_s": round(predict_s, 1),
                             **common})
                probabilities = project.prediction("nuclei3d", "probabilities")
                before = pipeline.instance_options(project, volume=True, segmenter=segmenter)
                pred = pipeline.postprocess(pipeline._ClassesFirst(probabilities), "instance", **before)
                rows.append({"path": "3-D, boundary seeds (before)", **score(gt, pred), **common})
                per_plane = np.stack([pipeline.postprocess(probabilities[z], "instance",
                                                           **pipeline.instance_options(project, segmenter=segmenter))
                                      for z in range(probabilities.shape[0])])
                rows.append({"path": "per-plane instances", **score(gt, planes_as_objects(per_plane)),
                             "plane_ap50": mean_plane_ap(gt, per_plane), **common})
    for method in methods:
        for path in dict.fromkeys(row["path"] for row in rows):
            picked = [row for row in rows if row["method"] == method and row["path"] == path and "draw" in row]
            if picked:
                rows.append({"path": path, "method": method, "draw": "mean",
                             "ap50": float(np.mean([row["ap50"] for row in picked])),
                             "map": float(np.mean([row["map"] for row in picked]))})
    return rows, info


# ----------------------------------------------------------------------------- scale


def _scale_worker(shape: tuple[int, int, int], folder: str) -> dict:
    """In a fresh process: synthetic volume → fake 3-class probabilities → 3-D instances → measurements."""
    from workbench.datasets import nuclei_volume
    from workbench.predict import average_precision, instances_from_probabilities, measure_objects
    from workbench.store import derive_boundaries, labels_from_instances

    timings = {}
    started = time.perf_counter()
    image, gt = nuclei_volume(shape, seed=3, spacing=(2.0, 1.0, 1.0))
    timings["generate_s"] = time.perf_counter() - started
    started = time.perf_counter()
    labels = labels_from_instances(gt)
    boundary = derive_boundaries(labels, 2, spacing=(2.0, 1.0, 1.0))
    timings["boundaries_s"] = time.perf_counter() - started
    # Probabilities a good model would give: the derived classes, blurred, so the watershed's work is real.
    from scipy import ndimage as ndi

    probabilities = np.zeros((3,) + shape, np.float32)
    probabilities[2] = ndi.gaussian_filter(boundary.astype(np.float32), 0.7)
    interior = (labels == 2) & ~boundary
    probabilities[1] = ndi.gaussian_filter(interior.astype(np.float32), 0.7)
    del interior, boundary, labels
    np.clip(1.0 - probabilities[1] - probabilities[2], 0, 1, out=probabilities[0])
    started = time.perf_counter()
    instances = instances_from_probabilities(probabilities, spacing=(2.0, 1.0, 1.0), min_size=20)
    timings["instances_s"] = time.perf_counter() - started
    # The split a 2-D model's volumes get in the product: seeds from the objects' shape.
    started = time.perf_counter()
    by_shape = instances_from_probabilities(probabilities, seeds="shape", spacing=(2.0, 1.0, 1.0), min_distance=4,
                                            min_size=20)
    timings["shape_instances_s"] = time.perf_counter() - started
    shape_ap = average_precision(gt, by_shape)["ap50"]
    del by_shape
    del probabilities
    started = time.perf_counter()
    table = measure_objects(instances, image, pixel_size=(2.0, 1.0, 1.0))
    timings["measure_s"] = time.perf_counter() - started
    ap = average_precision(gt, instances)
    return {**{k: round(v, 1) for k, v in timings.items()}, "objects_gt": int(gt.max()), "objects": len(table),
            "ap50_from_ideal_probabilities": round(ap["ap50"], 3), "shape_ap50_from_ideal": round(shape_ap, 3),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def _blockwise_scale_make(shape: tuple[int, int, int], folder: str) -> None:
    """Synthetic volume, its ground truth and ideal 3-class probabilities written to Zarr in `folder`."""
    import zarr
    from scipy import ndimage as ndi

    from workbench.datasets import nuclei_volume
    from workbench.store import derive_boundaries, labels_from_instances

    _, gt = nuclei_volume(shape, seed=3, spacing=(2.0, 1.0, 1.0))
    zarr.open_array(f"{folder}/gt.zarr", mode="w", shape=shape, dtype=np.int32, chunks=(16, 512, 512))[...] = gt
    labels = labels_from_instances(gt)
    del gt
    boundary = derive_boundaries(labels, 2, spacing=(2.0, 1.0, 1.0))
    interior = (labels == 2) & ~boundary
    del labels
    store = zarr.open_array(f"{folder}/probabilities.zarr", mode="w", shape=(3,) + shape, dtype=np.float32,
                            chunks=(3, 16, 256, 256))
    store[2] = ndi.gaussian_filter(boundary.astype(np.float32), 0.7)
    store[1] = ndi.gaussian_filter(interior.astype(np.float32), 0.7)
    store[0] = np.clip(1.0 - store[1] - store[2], 0, 1)


def _blockwise_scale_worker(folder: str) -> dict:
    """In a fresh process: the product's path for a stack over the in-memory limit — probabilities in
    Zarr, 3-D instances with shape seeds block by block into Zarr (`pipeline.volume_instances`)."""
    import zarr

    from workbench import pipeline

    store = zarr.open_array(f"{folder}/probabilities.zarr", mode="r")
    shape = tuple(store.shape[1:])
    out = zarr.open_array(f"{folder}/labels.zarr", mode="w", shape=shape, dtype=np.int32, chunks=(16, 512, 512))
    options = {"seeds": "shape", "spacing": (2.0, 1.0, 1.0), "min_distance": 4, "min_size": 20}
    started = time.perf_counter()
    pipeline.volume_instances(store, options, out=out, scratch=folder)
    return {"blockwise_instances_s": round(time.perf_counter() - started, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def _blockwise_scale_score(folder: str) -> dict:
    import zarr

    from workbench.predict import average_precision

    gt = zarr.open_array(f"{folder}/gt.zarr", mode="r")[...]
    labels = zarr.open_array(f"{folder}/labels.zarr", mode="r")[...]
    return {"objects_gt": int(gt.max()), "objects": int(labels.max()),
            "shape_ap50_from_ideal": round(average_precision(gt, labels)["ap50"], 3)}


def blockwise_scale_row(shape: tuple[int, int, int]) -> dict:
    """Make the volume, run the blockwise path and score it, each in a fresh process (peak of the run alone)."""
    def child(call: str) -> dict:
        code = f"import json; from benchmarks import bench_volumes as b; print(json.dumps({call}))"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parents[1])
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="bench-volumes-blockwise-") as tmp:
        child(f"b._blockwise_scale_make({tuple(shape)!r}, {tmp!r}) or {{}}")
        row = child(f"b._blockwise_scale_worker({tmp!r})")
        row.update(child(f"b._blockwise_scale_score({tmp!r})"))
    return {"shape": " × ".join(str(s) for s in shape), **row}


def scale_row(shape: tuple[int, int, int]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-volumes-scale-") as tmp:
        code = (f"import json; from benchmarks import bench_volumes as b; "
                f"print(json.dumps(b._scale_worker({tuple(shape)!r}, {tmp!r})))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parents[1])
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"shape": " × ".join(str(s) for s in shape), "voxels_M": round(float(np.prod(shape)) / 1e6, 1), **row}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets and sizes (numbers mean nothing)")
    parser.add_argument("--epochs", type=int, default=30, help="U-Net training epochs of 10 steps (default 30)")
    parser.add_argument("--object-fraction", type=float, default=0.8,
                        help="share of the left half's whole nuclei painted (default 0.8)")
    parser.add_argument("--boundary-width", type=int, default=1)
    parser.add_argument("--large", default="128,1024,1024", help="Z,Y,X of the synthetic scale volume")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--seeds", default="0,1,2", help="label draws (and training seeds) of the accuracy runs")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--blockwise", action="store_true",
                        help="also time the blockwise path of a large stack (probabilities in Zarr), fresh processes")
    args = parser.parse_args(argv)
    epochs = 1 if args.quick else args.epochs
    large = (16, 128, 128) if args.quick else tuple(int(v) for v in args.large.split(","))
    if not args.skip_accuracy:
        rows, info = accuracy_rows(epochs, args.object_fraction, args.boundary_width,
                                   seeds=(0,) if args.quick else tuple(int(v) for v in args.seeds.split(",")))
        draws = "; ".join(f"draw {d['seed']}: {d['painted']} nuclei, {d['labelled_fraction']:.1%}" for d in info["draws"])
        print(f"Real volume `stardist_nuclei_3d` (31 × 61 × 57, {info['n_nuclei']} nuclei): whole nuclei painted "
              f"through the stack in the left half (x < 28) plus background strokes on its planes ({draws} of the "
              f"left half's voxels); scored in 3-D on the right half (x ≥ 28, never seen in training). 2-D U-Net, "
              f"{epochs} epochs of 10 steps (batch 8, 64² patches), the draw's number as its seed; forest with "
              f"its defaults; boundary width {args.boundary_width}.\n")
        print(markdown_table(rows, ["method", "draw", "path", "ap50", "map", "plane_ap50", "n_pred", "z_scale",
                                    "foreground", "steps", "train_s", "predict_s"],
                             {"ap50": "3-D AP@0.5", "map": "3-D mAP", "plane_ap50": "mean per-plane 2-D AP@0.5",
                              "n_pred": "objects", "z_scale": "z-scale", "foreground": "foreground threshold",
                              "train_s": "train s", "predict_s": "predict s"}))
        best = max(row["ap50"] for row in rows if row["draw"] == "mean")
        print(f"\nTarget 3-D AP@0.5 ≥ {AP50_GOAL} (mean over the draws, best method): "
              f"{'met' if best >= AP50_GOAL else 'missed'} ({best:.3f}, {best - AP50_GOAL:+.3f}).\n")
    if not args.skip_scale:
        row = scale_row(large)
        print("Scale: synthetic volume (`nuclei_volume`, voxel 2 × 1 × 1 µm) with 3-class probabilities made "
              "from its ground truth (no network: this times the 3-D engine, not the U-Net), in a fresh process.\n")
        print(markdown_table([row], list(row)))
        if args.blockwise:
            row = blockwise_scale_row(large)
            print("\nThe product's path above the in-memory limit: the same probabilities in Zarr, shape seeds, "
                  "block by block into Zarr (`pipeline.volume_instances`), in a fresh process.\n")
            print(markdown_table([row], list(row)))


if __name__ == "__main__":
    main()
