"""Blockwise instances and measurements: the same objects as whole-image post-processing, whatever the grid."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from workbench.predict import instances_from_probabilities, measure_objects
from workbench.predict._blockwise import (
    BlockGrid,
    BlockwiseError,
    blockwise_instances,
    measure_block,
    neighbour_distances,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def probabilities_from(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Three-class probabilities shaped like a network's: smooth, from the real image and its objects."""
    intensity = (image - np.percentile(image, 1)) / (np.percentile(image, 99.5) - np.percentile(image, 1))
    intensity = np.clip(intensity, 0, 1)
    foreground = np.clip(0.75 * ndi.gaussian_filter((labels > 0).astype(np.float32), 1.5) + 0.25 * intensity, 0, 1)
    boundary = np.clip(1.6 * ndi.gaussian_filter(find_boundaries(labels, mode="inner").astype(np.float32), 1.0), 0, 1)
    boundary = np.minimum(boundary, foreground)
    return np.stack([1 - foreground, foreground - boundary, boundary]).astype(np.float32)


@pytest.fixture(scope="module")
def nuclei_probabilities(nuclei_image, nuclei_labels):
    return probabilities_from(nuclei_image.astype(np.float32), nuclei_labels)


def largest_extent(labels: np.ndarray) -> int:
    return max(max(s.stop - s.start for s in box) for box in ndi.find_objects(labels) if box is not None)


def best_overlaps(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per reference object: IoU with its best candidate, and the share of it the best candidate covers."""
    ious, shares = [], []
    for ref_id in np.unique(reference[reference > 0]):
        inside = reference == ref_id
        ids, counts = np.unique(candidate[inside], return_counts=True)
        counts = np.where(ids == 0, 0, counts)
        best = ids[np.argmax(counts)]
        union = np.logical_or(inside, candidate == best).sum()
        ious.append(counts.max() / union if best else 0.0)
        shares.append(counts.max() / inside.sum())
    return np.array(ious), np.array(shares)


def test_blocks_give_the_whole_image_objects_on_the_real_image(nuclei_probabilities, nuclei_labels):
    whole = instances_from_probabilities(nuclei_probabilities, min_size=16)
    halo = largest_extent(nuclei_labels)
    # 64-pixel blocks: 64 blocks, many nuclei cut by faces and corners.
    blocks, summary = blockwise_instances(nuclei_probabilities, block_size=64, halo=halo, min_size=16)
    assert summary.blocks == 64 and summary.objects == int(blocks.max())
    assert len(np.unique(whole)) - 1 >= 100
    ious, shares = best_overlaps(whole, blocks)
    assert (ious >= 0.95).mean() >= 0.99
    # No object split along a face: every whole-image object is covered by one blockwise object.
    assert shares.min() >= 0.9
    crossing = [i for i, box in enumerate(ndi.find_objects(whole)) if box is not None and any(
        s.start // 64 != (s.stop - 1) // 64 for s in box)]
    assert len(crossing) > 30  # the test means something: many objects cross faces
    assert (ious[crossing] >= 0.95).all()


def test_result_does_not_depend_on_the_grid(nuclei_probabilities, nuclei_labels):
    halo = largest_extent(nuclei_labels)
    first, _ = blockwise_instances(nuclei_probabilities, block_size=64, halo=halo, min_size=16)
    second, _ = blockwise_instances(nuclei_probabilities, block_size=(96, 80), halo=halo, min_size=16)
    # Ids are numbered in raster order of each object's first pixel, so equal objects get equal ids.
    assert np.mean(first == second) > 0.999
    assert (first != second).sum() < 50


def test_ids_are_unique_across_blocks(nuclei_probabilities, nuclei_labels):
    labels, summary = blockwise_instances(nuclei_probabilities, block_size=48, halo=largest_extent(nuclei_labels),
                                          min_size=16)
    ids = np.unique(labels[labels > 0])
    assert np.array_equal(ids, np.arange(1, summary.objects + 1))
    # One id is one object: its pixels are connected, never two objects in two blocks.
    for box_index, box in enumerate(ndi.find_objects(labels)):
        _, n_parts = ndi.label(labels[box] == box_index + 1)
        assert n_parts == 1, f"id {box_index + 1} is {n_parts} separate pieces"


def disc(shape, centre, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def probabilities_of_objects(objects: np.ndarray) -> np.ndarray:
    boundary = find_boundaries(objects, mode="inner")
    interior = (objects > 0) & ~boundary
    return np.stack([objects == 0, interior, boundary]).astype(np.float32)


def test_objects_larger_than_the_halo_are_merged_across_faces_and_corners():
    shape = (96, 96)
    objects = np.zeros(shape, np.int32)
    objects[disc(shape, (32, 32), 14)] = 1  # centred on the corner of four 32-pixel blocks
    objects[disc(shape, (48, 75), 10)] = 2  # across one face
    # A halo of 4 is far less than the objects: every block sees only part of them.
    labels, summary = blockwise_instances(probabilities_of_objects(objects), block_size=32, halo=4, min_size=4)
    assert summary.objects == 2 and summary.merged_across_faces >= 2
    for ref in (1, 2):
        inside = objects == ref
        assert len(np.unique(labels[inside])) == 1 and labels[inside].min() > 0


def test_touching_objects_on_either_side_of_a_face_stay_apart():
    objects = np.zeros((64, 64), np.int32)
    objects[10:40, 12:32] = 1  # ends on the face between two 32-pixel blocks...
    objects[10:40, 32:52] = 2  # ...where its neighbour starts
    labels, summary = blockwise_instances(probabilities_of_objects(objects), block_size=32, halo=4, min_size=4)
    assert summary.objects == 2
    assert len(np.unique(labels[objects == 1])) == 1 and len(np.unique(labels[objects == 2])) == 1
    assert labels[20, 20] != labels[20, 45]


def test_empty_blocks_are_skipped_and_counted(tmp_path):
    shape = (256, 256)
    objects = np.zeros(shape, np.int32)
    objects[disc(shape, (40, 40), 9)] = 1
    probabilities = zarr.create_array(str(tmp_path / "p.zarr"), shape=(3, *shape), chunks=(3, 64, 64),
                                      dtype="float32")
    probabilities[...] = probabilities_of_objects(objects)
    ids = zarr.create_array(str(tmp_path / "ids.zarr"), shape=shape, chunks=(64, 64), dtype="int64", fill_value=0)
    out = zarr.create_array(str(tmp_path / "labels.zarr"), shape=shape, chunks=(64, 64), dtype="int32",
                            fill_value=0)
    labels, summary = blockwise_instances(probabilities, out, ids=ids, block_size=64, halo=16, min_size=4)
    # The nucleus (rows and columns 31..49) lies in block (0, 0); the windows of (0, 1) and (1, 0)
    # reach back to 48 and see its edge, the other 13 see nothing.
    assert summary.blocks == 16 and summary.skipped_empty == 13 and summary.objects == 1
    assert np.array_equal(labels[...] > 0, objects > 0)


def test_three_dimensional_blocks_with_any_instance_function(shared_dir):
    # The block machinery is N-D: with connected components as the per-block function it must
    # give exactly the whole-volume components of the real 3-D nuclei, cut into 3-D blocks.
    truth = tifffile.imread(shared_dir / "data" / "stardist_nuclei_3d" / "labels.tif")
    # Nuclei without their outlines, so that touching nuclei are separate components.
    foreground = ((truth > 0) & ~find_boundaries(truth, mode="inner")).astype(np.float32)
    probabilities = np.stack([1 - foreground, foreground])

    def components(window, foreground_threshold=0.5, **_):
        return ndi.label(window[1] > foreground_threshold)[0]

    whole, n_whole = ndi.label(foreground > 0.5)
    assert n_whole > 30
    labels, summary = blockwise_instances(probabilities, block_size=(8, 16, 16), halo=largest_extent(whole),
                                          instance_function=components)
    assert summary.objects == n_whole
    assert summary.blocks == 4 * 4 * 4
    # Same partition: every whole-volume component is exactly one blockwise id and back.
    pairs = np.unique(np.stack([whole.ravel(), labels.ravel()]), axis=1)
    assert len(pairs[0]) == n_whole + 1 and len(np.unique(pairs[1])) == n_whole + 1


def test_block_grid_checks_its_arguments():
    with pytest.raises(BlockwiseError, match="block_size"):
        BlockGrid.create((100, 100), 0, 8)
    with pytest.raises(BlockwiseError, match="halo"):
        BlockGrid.create((100, 100), 32, (4, 4, 4))
    with pytest.raises(BlockwiseError, match="probabilities"):
        blockwise_instances(np.zeros((10, 10)), block_size=4, halo=1)
    grid = BlockGrid.create((100, 70), 32, 8)
    assert grid.counts == (4, 3) and grid.window((0, 2)) == (slice(0, 40), slice(56, 70))
    assert len(list(grid.neighbours((1, 1)))) == 8 and len(list(grid.neighbours((0, 0)))) == 3


def test_blockwise_measurements_measure_each_object_once(nuclei_image, nuclei_labels):
    labels = nuclei_labels.astype(np.int32)
    whole = measure_objects(labels, nuclei_image, pixel_size=(0.5, 0.5))
    grid = BlockGrid.create(labels.shape, 100, largest_extent(labels))
    parts = [measure_block(labels, grid, index, intensity=nuclei_image, pixel_size=(0.5, 0.5))
             for index in grid.indices()]
    table = pd.concat(parts, ignore_index=True).sort_values("label").reset_index(drop=True)
    assert len(table) == len(whole) and table["label"].is_unique and not table["truncated"].any()
    table = table.assign(**neighbour_distances(table[["centroid_y", "centroid_x"]].to_numpy(),
                                               pixel_size=(0.5, 0.5)))
    # Neighbour lists queried a few points at a time give the same distances.
    chunked = neighbour_distances(table[["centroid_y", "centroid_x"]].to_numpy(), chunk=7)
    np.testing.assert_array_equal(chunked["neighbour_distance_px"], table["neighbour_distance_px"])
    for column in whole.columns:
        np.testing.assert_allclose(table[column].to_numpy(float), whole[column].to_numpy(float),
                                   rtol=1e-9, atol=1e-9, err_msg=column)
