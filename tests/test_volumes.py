"""Z-stacks as volumes, on the real 3-D nuclei volume (../shared/data/stardist_nuclei_3d).

3-D label import and boundaries, anisotropy, 3-D instances (one id per nucleus through the
stack), 3-D measurements and matching, the voxel size from files and settings, ImageJ
hyperstack output, and training on partial labels of one half scored in 3-D on the other.
"""

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from workbench import pipeline
from workbench.cli import main
from workbench.datasets import simulate_partial_labels
from workbench.predict import (average_precision, calibrate_volume_instances, instances_from_probabilities,
                               match_instances, measure_objects, painted_region, painted_shape)
from workbench.store import (BACKGROUND, OBJECT, Project, derive_boundaries, labels_from_instances, open_image,
                             painted_objects, plane_training_targets, training_targets, write_image)

TRAIN_HALF = np.s_[:, :, :28]
TEST_HALF = np.s_[:, :, 28:]


@pytest.fixture(scope="module")
def volume(shared_dir):
    folder = shared_dir / "data" / "stardist_nuclei_3d"
    return tifffile.imread(folder / "image.tif"), tifffile.imread(folder / "labels.tif").astype(np.int32)


@pytest.fixture()
def volume_files(tmp_path, volume):
    image, gt = volume
    tifffile.imwrite(tmp_path / "stack.tif", image)
    tifffile.imwrite(tmp_path / "mask3d.tif", gt.astype(np.uint16))
    return tmp_path


def _ideal_probabilities(gt, width=1, spacing=None, sigma=0.7):
    """Three-class probabilities a good model would give: the derived classes, slightly blurred."""
    labels = labels_from_instances(gt)
    boundary = derive_boundaries(labels, width, spacing=spacing)
    interior = (labels == OBJECT) & ~boundary
    probabilities = np.zeros((3,) + gt.shape, np.float32)
    probabilities[1] = ndi.gaussian_filter(interior.astype(np.float32), sigma)
    probabilities[2] = ndi.gaussian_filter(boundary.astype(np.float32), sigma)
    probabilities[0] = np.clip(1 - probabilities[1] - probabilities[2], 0, 1)
    return probabilities


# ----------------------------------------------------------------------------- labels and boundaries


def test_instance_mask_volume_becomes_3d_labels(volume):
    _, gt = volume
    labels = labels_from_instances(gt)
    objects, count = painted_objects(labels)
    assert count == len(np.unique(gt)) - 1  # one painted object per nucleus, through the stack
    # Each painted object lies in exactly one nucleus, and touching nuclei got a contact sheet.
    pairs = np.unique(np.stack([objects[objects > 0], gt[objects > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == count
    lost = (gt > 0).sum() - (labels == OBJECT).sum()
    assert 0 < lost < 0.1 * (gt > 0).sum()


def test_3d_boundaries_outline_nuclei_along_z_too(volume):
    _, gt = volume
    labels = labels_from_instances(gt)
    band_3d = derive_boundaries(labels, 1)
    band_planes = derive_boundaries(labels, 1, boundaries="per-plane")
    assert not band_3d[labels != OBJECT].any()
    assert (band_planes <= band_3d).all()  # fully painted: 3-D adds the top and bottom faces
    # A voxel is 3-D boundary exactly when a face neighbour (inside the volume) is not the object.
    inside = labels == OBJECT
    eroded = ndi.binary_erosion(inside, ndi.generate_binary_structure(3, 1), border_value=1)
    np.testing.assert_array_equal(band_3d, inside & ~eroded)
    # The faces added in 3-D lie where the nucleus ends along z in the ground truth (the rest
    # beside a contact line between two nuclei, which is painted background).
    added = band_3d & ~band_planes
    contact = (gt > 0) & (labels == BACKGROUND)
    above, below = gt.copy(), gt.copy()
    above[:-1], below[1:] = gt[1:], gt[:-1]
    beside_contact = np.zeros_like(contact)
    beside_contact[:-1] |= contact[1:]
    beside_contact[1:] |= contact[:-1]
    ends_along_z = (above != gt) | (below != gt)
    assert added.any() and (ends_along_z | beside_contact)[added].all()
    assert ends_along_z[added].mean() > 0.8


def test_anisotropy_sets_how_far_the_band_reaches_along_z():
    labels = np.full((20, 30, 30), BACKGROUND, np.uint8)
    labels[4:16, 5:25, 5:25] = OBJECT
    column = derive_boundaries(labels, 2, spacing=(1.0, 1.0, 1.0))[:, 15, 15]
    assert column[4:16].tolist() == [True] * 2 + [False] * 8 + [True] * 2
    coarse = derive_boundaries(labels, 2, spacing=(2.0, 1.0, 1.0))[:, 15, 15]
    assert coarse[4:16].tolist() == [True] + [False] * 10 + [True]  # 2 px = 1 plane of 2 µm
    fine = derive_boundaries(labels, 2, spacing=(0.5, 1.0, 1.0))[:, 15, 15]
    assert fine[4:16].tolist() == [True] * 4 + [False] * 4 + [True] * 4
    # In-plane the band is 2 px whatever the z spacing.
    assert derive_boundaries(labels, 2, spacing=(2.0, 1.0, 1.0))[10, 15, 5:25].sum() == 4


def test_unpainted_planes_do_not_outline_a_nucleus_painted_on_some_planes(volume):
    _, gt = volume
    nucleus = np.bincount(gt.ravel())[1:].argmax() + 1
    zs = np.flatnonzero((gt == nucleus).any(axis=(1, 2)))
    middle = zs[len(zs) // 2]
    labels = np.zeros(gt.shape, np.uint8)
    labels[middle][gt[middle] == nucleus] = OBJECT  # painted on one plane only, nothing around
    band = derive_boundaries(labels, 1)
    np.testing.assert_array_equal(band, derive_boundaries(labels, 1, boundaries="per-plane"))
    assert (labels[middle] == OBJECT).sum() > band[middle].sum()  # an interior is left to learn from


def test_plane_targets_read_only_neighbouring_planes_and_match_the_volume(volume):
    _, gt = volume
    labels = simulate_partial_labels(gt, object_fraction=0.6, region=TRAIN_HALF, seed=2, stroke_width=3)
    whole = training_targets(labels, "instance", 2)
    for z in range(labels.shape[0]):
        np.testing.assert_array_equal(plane_training_targets(labels, z, "instance", 2), whole[z])
    per_plane = training_targets(labels, "instance", 2, boundaries="per-plane")
    assert (whole == 2).sum() > (per_plane == 2).sum()
    np.testing.assert_array_equal(plane_training_targets(labels, 5, "instance", 2, boundaries="per-plane"),
                                  per_plane[5])


# ----------------------------------------------------------------------------- instances and metrics


def test_3d_instances_give_one_id_per_nucleus_through_the_stack(volume):
    _, gt = volume
    instances = instances_from_probabilities(_ideal_probabilities(gt), min_size=10)
    assert instances.shape == gt.shape
    scores = average_precision(gt, instances)
    assert scores["ap50"] >= 0.9, scores
    # Matched nuclei keep one id on every plane they cover.
    overlap = match_instances(gt, instances)
    matched = overlap.pred_ids[(overlap.iou > 0.5).any(axis=0)]
    planes_per_id = [len(np.unique(np.flatnonzero((instances == i).any(axis=(1, 2))))) for i in matched]
    gt_planes = sorted(len(np.flatnonzero((gt == i).any(axis=(1, 2)))) for i in overlap.gt_ids)
    assert max(planes_per_id) >= gt_planes[len(gt_planes) // 2]  # objects span many planes, not one
    # Per plane, the same probabilities give one object per plane and nucleus: far worse in 3-D.
    per_plane = np.stack([instances_from_probabilities(p, min_size=4) for p in _ideal_probabilities(gt).swapaxes(0, 1)])
    offsets = np.cumsum([0] + [int(p.max()) for p in per_plane[:-1]])
    per_plane_ids = np.where(per_plane > 0, per_plane + offsets[:, None, None], 0)
    assert average_precision(gt, per_plane_ids)["ap50"] < 0.2


def test_two_class_split_follows_the_voxel_size():
    # Two balls of radius 6 µm touching, sampled at 2 µm in z: in voxels they are flat discs.
    z, y, x = np.mgrid[:12, :40, :60]
    ball = lambda cx: ((z * 2.0 - 11) ** 2 + (y - 20) ** 2 + (x - cx) ** 2) <= 36  # noqa: E731
    gt = np.zeros(z.shape, np.int32)
    gt[ball(21)] = 1
    gt[ball(32) & (gt == 0)] = 2
    probabilities = np.stack([gt == 0, gt > 0]).astype(np.float32)
    physical = instances_from_probabilities(probabilities, spacing=(2.0, 1.0, 1.0), min_distance=4, min_size=10)
    assert average_precision(gt, physical)["ap50"] == 1.0
    with pytest.raises(ValueError, match="spacing"):
        instances_from_probabilities(probabilities, spacing=(2.0, -1.0, 1.0))


def _stacked_nuclei():
    """Two nuclei stacked along z, touching, as a 2-D model predicts them: interior through both
    (it cannot see where one ends along z), boundary only around their sides."""
    z, y, x = np.mgrid[:20, :30, :30]
    ball = lambda cz: (((z - cz) * 2.0) ** 2 + (y - 15) ** 2 + (x - 15) ** 2) <= 81  # noqa: E731 - 9 px wide
    gt = np.zeros(z.shape, np.int32)
    gt[ball(5.5)] = 1
    gt[ball(13.5) & (gt == 0)] = 2
    per_plane = np.stack([derive_boundaries(labels_from_instances(plane), 1) for plane in gt])
    probabilities = np.zeros((3,) + gt.shape, np.float32)
    probabilities[2] = per_plane
    probabilities[1] = (gt > 0) & ~per_plane
    probabilities[0] = gt == 0
    return gt, ndi.gaussian_filter(probabilities, (0, 0.7, 0.7, 0.7))


def test_shape_seeds_split_nuclei_stacked_along_z_that_boundary_seeds_merge():
    gt, probabilities = _stacked_nuclei()
    merged = instances_from_probabilities(probabilities, min_size=10)
    assert merged.max() == 1  # one interior through both: boundary seeds cannot split them
    split = instances_from_probabilities(probabilities, seeds="shape", spacing=(2.0, 1.0, 1.0), min_distance=3,
                                         min_size=10)
    assert average_precision(gt, split)["ap50"] == 1.0
    with pytest.raises(ValueError, match="seeds"):
        instances_from_probabilities(probabilities, seeds="peaks")


def test_painted_shape_of_the_real_volume_and_its_calibration(volume):
    """The painted nuclei (left half) say how flat nuclei are in voxels; their fit picks the threshold."""
    _, gt = volume
    labels = simulate_partial_labels(gt, object_fraction=0.8, region=TRAIN_HALF, seed=0, stroke_width=3,
                                     stroke_length=40)
    shape = painted_shape([labels])
    # Whole nuclei here are about 17 px wide and 8 planes deep; the painted ones of the left half say 16 / 9.
    assert shape.objects == painted_objects(labels)[1]
    assert 1.5 <= shape.z_scale <= 2.5 and 12 <= shape.diameter <= 20
    options = {**shape.options(), "min_size": 20}
    assert options["seeds"] == "shape" and options["min_distance"] == 4
    assert painted_shape([labels[:, :, 27:]]) is None  # a sliver of painted objects says nothing
    # Probabilities whose foreground reaches 2 px beyond the nuclei: a higher threshold fits the
    # painted objects better, and is chosen on them alone.
    region = painted_region(labels, 8)
    foreground = ndi.distance_transform_edt(gt == 0) <= 2
    blurred = ndi.gaussian_filter(foreground.astype(np.float32), 1.5)
    probabilities = np.stack([1 - blurred, blurred, np.zeros_like(blurred)])
    calibration = calibrate_volume_instances([(probabilities[(slice(None),) + region], labels[region])], options)
    assert calibration.objects == shape.objects
    assert calibration.scores[calibration.foreground_threshold] == max(calibration.scores.values())
    assert calibration.foreground_threshold >= 0.6 > calibration.scores[0.4]
    assert calibrate_volume_instances([(probabilities[(slice(None),) + region], np.ones_like(labels[region]))],
                                      options) is None


def test_3d_matching_counts_a_plane_shifted_object_once():
    gt = np.zeros((10, 20, 20), np.int32)
    gt[2:8, 5:15, 5:15] = 7
    pred = np.zeros_like(gt)
    pred[3:9, 5:15, 5:15] = 3  # one plane off: IoU 5/7
    scores = average_precision(gt, pred)
    assert scores["tp"][0] == 1 and scores["ap"][list(scores["thresholds"]).index(0.7)] == 1.0
    assert scores["ap"][list(scores["thresholds"]).index(0.75)] == 0.0
    np.testing.assert_allclose(match_instances(gt, pred).iou, [[5 / 7]])


# ----------------------------------------------------------------------------- measurements


def test_measurements_of_real_nuclei_as_volumes(volume):
    image, gt = volume
    table = measure_objects(gt, image, pixel_size=(2.0, 0.5, 0.5))
    assert len(table) == len(np.unique(gt)) - 1
    voxels = np.bincount(gt.ravel())[table["label"]]
    np.testing.assert_array_equal(table["volume_voxels"], voxels)
    np.testing.assert_allclose(table["volume_um3"], voxels * 0.5)
    assert ((table["sphericity"] > 0.3) & (table["sphericity"] <= 1.0)).all()
    np.testing.assert_allclose(table["extent_z_um"], table["extent_z_px"] * 2.0)
    first = table.iloc[0]
    mask = gt == first["label"]
    assert first["intensity_mean"] == pytest.approx(image[mask].mean())
    assert first["centroid_z_um"] == pytest.approx(np.argwhere(mask)[:, 0].mean() * 2.0)
    # Neighbours in 3-D, in µm: the mean distance to the 8 nearest centroids, by brute force.
    points = table[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy()
    distances = np.sort(np.linalg.norm(points[:, None] - points[None], axis=-1), axis=1)[:, 1:9].mean(axis=1)
    np.testing.assert_allclose(table["neighbour_distance_um"], distances)


def test_ball_volume_surface_and_sphericity():
    z, y, x = np.mgrid[:30, :60, :60]
    # A ball of radius 12 µm sampled at 1 µm in z and 0.5 µm in y, x.
    ball = (((z - 15) * 1.0) ** 2 + ((y - 30) * 0.5) ** 2 + ((x - 30) * 0.5) ** 2 <= 144).astype(np.int32)
    row = measure_objects(ball, pixel_size=(1.0, 0.5, 0.5)).iloc[0]
    assert row["volume_um3"] == pytest.approx(4 / 3 * np.pi * 12**3, rel=0.03)
    assert row["surface_area_um2"] == pytest.approx(4 * np.pi * 144, rel=0.12)
    assert 0.88 < row["sphericity"] <= 1.0
    assert row["extent_z_um"] == pytest.approx(24, abs=1.01) and row["extent_x_um"] == pytest.approx(24, abs=0.51)
    assert row["major_axis_length_um"] == pytest.approx(row["minor_axis_length_um"], rel=0.05)


# ----------------------------------------------------------------------------- files, projects, command line


def test_voxel_size_from_an_imagej_stack_and_the_project_setting(tmp_path, volume):
    image, _ = volume
    write_image(tmp_path / "stack.tif", image, axes="ZYX", voxel_size=(2.0, 0.4, 0.4))
    source = open_image(tmp_path / "stack.tif")
    assert source.axes == "ZYX" and source.z_spacing == 2.0 and source.pixel_size == pytest.approx((0.4, 0.4))
    project = Project.create(tmp_path / "p", mode="instance", classes=["background", "nucleus"])
    name = project.add_image(tmp_path / "stack.tif")
    assert project.voxel_size(name) == pytest.approx((2.0, 0.4, 0.4))
    plain = project.add_image(image, name="plain", axes="ZYX")
    assert project.voxel_size(plain) is None  # unknown: isotropic voxels
    project.update_settings(voxel_size=[1.5, 0.3, 0.3])
    assert project.voxel_size(plain) == (1.5, 0.3, 0.3)
    assert project.voxel_size(name) == pytest.approx((2.0, 0.4, 0.4))  # the file's own comes first


def test_export_is_an_imagej_hyperstack_with_the_voxel_size(tmp_path, volume):
    _, gt = volume
    write_image(tmp_path / "labels.tif", gt, axes="ZYX", voxel_size=(2.0, 0.5, 0.25))
    with tifffile.TiffFile(tmp_path / "labels.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        assert tif.imagej_metadata["spacing"] == 2.0 and tif.imagej_metadata["unit"] == "um"
        np.testing.assert_array_equal(tif.asarray(), gt)
    many = np.zeros((2, 4, 4), np.int32)
    many[1, 1, 1] = 70_000  # more ids than 16 bits: float32 keeps them exact
    write_image(tmp_path / "many.tif", many, axes="ZYX")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "many.tif"), many)


def test_command_line_imports_a_3d_instance_mask(volume_files, capsys):
    proj = volume_files / "proj"
    assert main(["new", str(proj), "--mode", "instance", "--classes", "background,nucleus",
                 "--voxel-size", "2,0.5,0.5"]) == 0
    assert main(["add", str(proj), str(volume_files / "stack.tif")]) == 0
    assert main(["labels", str(proj), "stack", "--instances", str(volume_files / "mask3d.tif")]) == 0
    out = capsys.readouterr().out
    assert "51 objects" in out
    assert main(["info", str(proj)]) == 0
    assert "voxel 2 × 0.5 × 0.5 µm" in capsys.readouterr().out
    project = Project.open(proj)
    labels = project.read_labels("stack")
    np.testing.assert_array_equal(labels, labels_from_instances(tifffile.imread(volume_files / "mask3d.tif")))


@pytest.mark.parametrize("array, z, message", [
    (lambda gt: gt[3], None, "--z"),
    (lambda gt: gt, 4, "volume"),
    (lambda gt: gt[:-1], None, "same shape"),
])
def test_mismatched_label_imports_are_one_line_errors(volume_files, volume, array, z, message):
    _, gt = volume
    proj = volume_files / "proj"
    project = Project.create(proj, mode="instance", classes=["background", "nucleus"])
    project.add_image(volume_files / "stack.tif")
    tifffile.imwrite(volume_files / "bad.tif", array(gt).astype(np.uint16))
    argv = [sys.executable, "-m", "workbench.cli", "labels", str(proj), "stack", "--instances",
            str(volume_files / "bad.tif")] + (["--z", str(z)] if z is not None else [])
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


# ----------------------------------------------------------------------------- from partial labels


def _volume_project(tmp_path, image, labels, boundaries):
    project = Project.create(tmp_path / boundaries, mode="instance", classes=["background", "nucleus"],
                             boundary_width=1)
    project.update_settings(boundaries=boundaries)
    name = project.add_image(image, name="nuclei3d", axes="ZYX")
    project.import_labels(name, labels)
    return project, name


@pytest.mark.slow
def test_forest_on_partial_labels_segments_the_other_half_in_3d(tmp_path, volume, monkeypatch):
    """Minority of nuclei painted on one half; the unseen half scored with 3-D matching."""
    image, gt = volume
    labels = simulate_partial_labels(gt, object_fraction=0.8, region=TRAIN_HALF, seed=0, stroke_width=3,
                                     stroke_length=40)
    assert painted_objects(labels)[1] < (len(np.unique(gt)) - 1) / 2  # a minority of the nuclei
    project, name = _volume_project(tmp_path, image, labels, "3d")
    assert project.label_stats()["objects"] == painted_objects(labels)[1]
    pipeline.train_model(project, method="forest", settings={"seed": 0})
    summary = pipeline.predict_project(project)
    instances = project.prediction(name, "instances")[...]
    assert summary[name]["objects"] == int(instances.max())
    scores = average_precision(gt[TEST_HALF], instances[TEST_HALF])
    # Measured 0.467 (34 objects for 32 nuclei) with the volume split by the painted nuclei's
    # shape; 0.122 with boundary seeds before (14 objects: neighbours merged). Per plane: 0.0.
    assert scores["ap50"] >= 0.40, scores
    table = pipeline.measure_project(project)
    assert len(table) == int(instances.max()) and "volume_voxels" in table and "neighbour_distance_px" in table
    # The same stack treated as too large for memory: block by block, the same objects.
    monkeypatch.setattr(pipeline, "VOLUME_IN_MEMORY_VOXELS", 1000)
    monkeypatch.setattr(pipeline, "_VOLUME_BLOCK_SIDE", 24)
    pipeline.predict_project(project)
    blockwise = project.prediction(name, "instances")[...]
    assert average_precision(instances, blockwise, thresholds=(0.9,))["ap"][0] >= 0.99
    assert not list(project.path.glob("**/ids.zarr"))  # the scratch id map is gone
    out = pipeline.export_prediction(project, name, tmp_path / "instances.tif")
    np.testing.assert_array_equal(tifffile.imread(out), blockwise)


@pytest.mark.slow
def test_unet_on_partial_labels_segments_the_other_half_in_3d(tmp_path, volume):
    """The default 2-D U-Net, 300 steps: the shape split makes one object per nucleus through the stack."""
    image, gt = volume
    labels = simulate_partial_labels(gt, object_fraction=0.8, region=TRAIN_HALF, seed=0, stroke_width=3,
                                     stroke_length=40)
    project, name = _volume_project(tmp_path, image, labels, "3d")
    pipeline.train_model(project, settings={"minutes": None, "epochs": 30, "seed": 0, "patch_size": 64})
    pipeline.predict_project(project)
    instances = project.prediction(name, "instances")[...]
    scores = average_precision(gt[TEST_HALF], instances[TEST_HALF])
    # Measured 0.676 (draw 0; 0.771 for draw 1): AP@0.5 of 3-D objects on the unseen half.
    assert scores["ap50"] >= 0.60, scores
    segmenter = pipeline.load_segmenter(project)
    options = pipeline.volume_instance_options(project, segmenter)
    assert options["seeds"] == "shape" and options["foreground_threshold"] in (0.4, 0.5, 0.6, 0.7)
    # The boundary-seeded watershed on the same probabilities merges nuclei stacked along z.
    probabilities = project.prediction(name, "probabilities")
    before = pipeline.postprocess(pipeline._ClassesFirst(probabilities), "instance",
                                  **pipeline.instance_options(project, volume=True, segmenter=segmenter))
    assert average_precision(gt[TEST_HALF], before[TEST_HALF])["ap50"] < scores["ap50"] - 0.2


def test_large_stacks_are_split_block_by_block_as_in_memory(tmp_path, volume, monkeypatch):
    """Blockwise 3-D instances (shape seeds) equal the in-memory result on the real volume cut in
    small blocks: what a stack larger than the in-memory limit gets."""
    import zarr

    _, gt = volume
    probabilities = _ideal_probabilities(gt)
    options = {"seeds": "shape", "spacing": (2.0, 1.0, 1.0), "min_distance": 4, "min_size": 20,
               "foreground_threshold": 0.5}
    whole = instances_from_probabilities(probabilities, **options)
    # Cores of 16 x 24 x 24 voxels (halo 16 x 32 x 32): 2 x 3 x 3 blocks, nuclei across every face.
    monkeypatch.setattr(pipeline, "_VOLUME_BLOCK_SIDE", 24)
    monkeypatch.setattr(pipeline, "_VOLUME_BLOCK_DEPTH", 16)
    out = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=gt.shape, dtype=np.int32, chunks=(8, 32, 32))
    blockwise = pipeline.volume_instances(probabilities, options, out=out, scratch=tmp_path / "scratch",
                                          in_memory_voxels=1000)[...]
    assert (tmp_path / "scratch" / "ids.zarr").is_dir()  # the id map lived on disk, not in memory
    matched = average_precision(whole, blockwise, thresholds=(0.9,))
    assert matched["ap"][0] >= 0.99, matched  # object-level match, no object split along a face
    ids = np.unique(blockwise)[1:]
    assert ids.tolist() == list(range(1, len(ids) + 1))  # one id per object, 1..N
    assert average_precision(gt, blockwise)["ap50"] >= 0.9
