"""Tiled prediction: agrees with whole-image prediction, no seams, out of core, clear errors."""

import tracemalloc

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from workbench.errors import WorkbenchError
from workbench.predict._tiling import (DEFAULT_WINDOW, WINDOWS, TilingError, _tile_starts, predict_tiled,
                              predict_tiled_zarr)

# Gaussian with sigma 2 truncated at 3 sigma: the receptive field reaches 6 pixels.
RECEPTIVE_RADIUS = 6


def smooth_predictor(batch: np.ndarray) -> np.ndarray:
    """A fixed nonlinear two-class 'network' with a limited receptive field.

    Isotropic blur then a sigmoid, so it is equivariant under flips and
    quarter-turns. 'mirror' matches the tiler's reflect padding at the border.
    """
    grey = batch.mean(axis=1, keepdims=True) / 64.0
    blurred = ndi.gaussian_filter(grey, sigma=(0, 0, 2, 2), mode="mirror", truncate=3.0)
    detail = grey - ndi.gaussian_filter(grey, sigma=(0, 0, 1, 1), mode="mirror", truncate=3.0)
    foreground = 1 / (1 + np.exp(-(blurred - 1.0 + 3 * detail**2)))
    return np.concatenate([1 - foreground, foreground], axis=1).astype(np.float32)


def whole_image(image: np.ndarray) -> np.ndarray:
    return smooth_predictor(image[None].astype(np.float32))[0]


@pytest.fixture(scope="module")
def nuclei_cyx(nuclei_image):
    return nuclei_image[None]


def test_with_halo_equals_whole_image_prediction_everywhere(nuclei_cyx):
    tiled = predict_tiled(
        nuclei_cyx, smooth_predictor, 2, tile_size=128, overlap=0.25, halo=RECEPTIVE_RADIUS
    )
    assert tiled.dtype == np.float32 and tiled.shape == (2, 512, 512)
    np.testing.assert_allclose(tiled, whole_image(nuclei_cyx), atol=1e-5)


def _tile_edges(size, tile, step):
    starts = list(range(0, size - tile + step, step))
    edges = {s for s in starts[1:]} | {s + tile for s in starts[:-1]}
    return sorted(e for e in edges if 0 < e < size)


def _seam_error(prediction, reference, edges):
    """Worst mismatch of the step across each tile edge, compared with the reference."""
    errors = []
    for edge in edges:
        step = prediction[:, :, edge] - prediction[:, :, edge - 1]
        expected = reference[:, :, edge] - reference[:, :, edge - 1]
        errors.append(np.abs(step - expected).max())
        step = prediction[:, edge, :] - prediction[:, edge - 1, :]
        expected = reference[:, edge, :] - reference[:, edge - 1, :]
        errors.append(np.abs(step - expected).max())
    return max(errors)


def test_default_grid_is_monais_tile_count_spread_to_the_border():
    # MONAI places 1 + ceil((size - tile) / step) tiles per axis; so do we, but
    # spread evenly so the last tile ends at the border instead of running past it.
    assert _tile_starts(1024, 256, 64) == (0, 192, 384, 576, 768)
    assert _tile_starts(384, 256, 64) == (0, 128)
    assert _tile_starts(1000, 256, 64) == (0, 186, 372, 558, 744)
    assert _tile_starts(200, 256, 64) == (0,)
    for size in range(257, 1200, 37):
        starts = _tile_starts(size, 256, 64)
        assert len(starts) == 1 + -(-(size - 256) // 192)
        assert starts[-1] == size - 256 and min(np.diff(starts)) >= 1 and max(np.diff(starts)) <= 192


def test_default_window_blends_like_monai(nuclei_cyx):
    # A predictor that answers each tile's own mean: every tile differs, so the
    # blend shows the weights. Interior tiles carry MONAI's importance map.
    from monai.data.utils import compute_importance_map

    image = nuclei_cyx[:, :, :448].astype(np.float32)
    map_2d = compute_importance_map((128, 128), mode="gaussian", sigma_scale=0.125).numpy()

    def tile_mean(batch):
        return np.broadcast_to(batch.mean(axis=(2, 3), keepdims=True), batch.shape).copy()

    tiled = predict_tiled(image, tile_mean, 1, tile_size=128, overlap=32)
    assert DEFAULT_WINDOW == "gaussian"
    expected = np.zeros((512, 448)), np.zeros((512, 448))
    for y in (0, 96, 192, 288, 384):
        for x in (0, 80, 160, 240, 320):
            expected[0][y:y + 128, x:x + 128] += map_2d * image[0, y:y + 128, x:x + 128].mean()
            expected[1][y:y + 128, x:x + 128] += map_2d
    inner = np.s_[128:384, 128:320]  # covered by interior tiles only
    # Up to the floor: 1e-3 of our peak (1) versus MONAI's 1e-3 absolute (peak 0.999 off-centre).
    np.testing.assert_allclose(tiled[0][inner], (expected[0] / expected[1])[inner], rtol=2e-4)


def test_blending_without_halo_is_close_and_seamless(nuclei_cyx):
    # This predictor errs only within its receptive radius of a tile edge: the
    # full-tile Hann window suits it (MONAI's Gaussian floors every weight at
    # 1e-3, which lets tile corners through); for such predictors a halo is better still.
    reference = whole_image(nuclei_cyx)
    blended = predict_tiled(nuclei_cyx, smooth_predictor, 2, tile_size=128, overlap=32, halo=0, window="hann")
    hard = predict_tiled(
        nuclei_cyx, smooth_predictor, 2, tile_size=128, overlap=0, halo=0, window="constant"
    )
    interior = (slice(None), slice(8, -8), slice(8, -8))
    assert np.abs(blended - reference)[interior].max() < 0.02
    # The blended result has no visible steps where tiles meet; hard stitching does.
    blended_seams = _seam_error(blended, reference, _tile_edges(512, 128, 96))
    hard_seams = _seam_error(hard, reference, _tile_edges(512, 128, 128))
    assert blended_seams < 0.01
    assert hard_seams > 3 * blended_seams


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_every_window_is_exact_where_tiles_agree(window):
    # A pointwise predictor gives identical answers in every tile, so any
    # normalised blend must reproduce it exactly, border pixels included.
    image = np.random.default_rng(1).random((2, 150, 230), dtype=np.float32)

    def pointwise(batch):
        return np.concatenate([np.tanh(batch), batch**2, batch[:, :1] * batch[:, 1:]], axis=1)

    tiled = predict_tiled(image, pointwise, 5, tile_size=64, overlap=0.3, window=window)
    np.testing.assert_allclose(tiled, pointwise(image[None])[0], atol=1e-6)


@pytest.mark.parametrize(
    "n_channels, height, width",
    [(1, 300, 517), (3, 200, 130), (3, 130, 129), (1, 50, 70), (1, 1, 9)],
)
def test_sizes_not_divisible_by_the_tile_and_smaller_than_a_tile(
    nuclei_image, n_channels, height, width
):
    # Mirror the 512 x 512 image to reach widths beyond it.
    crop = np.pad(nuclei_image, ((0, 0), (0, 100)), mode="symmetric")[:height, :width]
    image = np.stack([crop * (c + 1) // 2 for c in range(n_channels)])
    tiled = predict_tiled(image, smooth_predictor, 2, tile_size=128, halo=RECEPTIVE_RADIUS)
    assert tiled.shape == (2, height, width)
    np.testing.assert_allclose(tiled, whole_image(image), atol=1e-5)


@pytest.mark.parametrize("height, width", [(512, 512), (300, 517), (130, 129), (50, 70)])
def test_clipped_halo_tiles_see_the_image_edge_as_the_whole_image_does(nuclei_image, height, width):
    crop = np.pad(nuclei_image, ((0, 0), (0, 100)), mode="symmetric")[:height, :width][None]
    seen = []

    def recording(batch):
        seen.extend([batch.shape[2:]] * batch.shape[0])
        return smooth_predictor(batch)

    tiled = predict_tiled(crop, recording, 2, tile_size=128, overlap=32, halo=RECEPTIVE_RADIUS, edge="clip")
    np.testing.assert_allclose(tiled, whole_image(crop), atol=1e-5)
    rows, cols = _tile_starts(height, 128, 32, regular=True), _tile_starts(width, 128, 32, regular=True)
    assert all(start % 96 == 0 for start in rows + cols)  # tiles start on multiples of the step
    expected = [
        (min(height, y + 128 + RECEPTIVE_RADIUS) - max(0, y - RECEPTIVE_RADIUS),
         min(width, x + 128 + RECEPTIVE_RADIUS) - max(0, x - RECEPTIVE_RADIUS))
        for y in rows for x in cols
    ]
    assert seen == expected  # the halo is read only where there is image: nothing reflected


def test_two_dimensional_image_is_one_channel(nuclei_image):
    tiled = predict_tiled(nuclei_image, smooth_predictor, 2, tile_size=128, halo=RECEPTIVE_RADIUS)
    np.testing.assert_allclose(tiled, whole_image(nuclei_image[None]), atol=1e-5)


def test_zarr_in_zarr_out_writes_every_chunk(nuclei_cyx, tmp_path):
    source = zarr.create_array(
        store=str(tmp_path / "image.zarr"), shape=(1, 512, 400), chunks=(1, 100, 100), dtype="uint16"
    )
    source[:] = nuclei_cyx[:, :, :400]
    messages = []
    out = predict_tiled_zarr(
        str(tmp_path / "image.zarr"),
        tmp_path / "probabilities.zarr",
        smooth_predictor,
        2,
        tile_size=128,
        overlap=32,
        halo=RECEPTIVE_RADIUS,
        progress=lambda fraction, message: messages.append((fraction, message)),
    )
    assert out.shape == (2, 512, 400) and out.dtype == np.float32
    # Chunks of one step: 96 down 512 rows; 400 columns take 3 steps of 91 (spread to the border).
    assert out.chunks == (2, 96, 91)
    assert out.nchunks_initialized == out.nchunks
    reopened = zarr.open_array(str(tmp_path / "probabilities.zarr"), mode="r")
    np.testing.assert_allclose(reopened[:], whole_image(nuclei_cyx[:, :, :400]), atol=1e-5)
    assert messages[-1][0] == 1.0 and "tiles" in messages[-1][1]
    with pytest.raises(TilingError, match="already exists"):
        predict_tiled_zarr(source, tmp_path / "probabilities.zarr", smooth_predictor, 2)
    with pytest.raises(TilingError, match="not a readable zarr array"):
        predict_tiled_zarr(tmp_path / "missing.zarr", tmp_path / "p2.zarr", smooth_predictor, 2)


def test_tta_with_an_equivariant_predictor_changes_nothing(nuclei_cyx):
    crop = nuclei_cyx[:, 100:300, 50:330]
    calls = []

    def counted(batch):
        calls.append(batch.shape[0])
        return smooth_predictor(batch)

    plain = predict_tiled(crop, smooth_predictor, 2, tile_size=96, halo=RECEPTIVE_RADIUS)
    augmented = predict_tiled(crop, counted, 2, tile_size=96, halo=RECEPTIVE_RADIUS, tta=True)
    np.testing.assert_allclose(augmented, plain, atol=1e-5)
    n_tiles = 3 * 4
    assert sum(calls) == 8 * n_tiles


def test_tta_undoes_each_transform():
    # An orientation-sensitive predictor: its TTA average is the mean over the
    # eight symmetric versions of the image, computed here independently.
    image = np.random.default_rng(2).random((1, 64, 64), dtype=np.float32)

    def row_gradient(batch):
        return np.diff(batch, axis=2, append=batch[:, :, -1:])

    augmented = predict_tiled(image, row_gradient, 1, tile_size=64, tta=True)
    expected = np.zeros_like(image)
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(image, turns, axes=(1, 2))
            view = view[..., ::-1] if flip else view
            answer = row_gradient(view[None])[0]
            answer = answer[..., ::-1] if flip else answer
            expected += np.rot90(answer, -turns, axes=(1, 2)) / 8
    np.testing.assert_allclose(augmented, expected, atol=1e-6)


def test_batches_respect_batch_size_and_progress_reaches_one(nuclei_cyx):
    sizes, fractions = [], []

    def recording(batch):
        sizes.append(batch.shape[0])
        assert batch.dtype == np.float32 and batch.shape[1:] == (1, 128 + 8, 128 + 8)
        return smooth_predictor(batch)

    predict_tiled(nuclei_cyx, recording, 2, tile_size=128, halo=4, batch_size=3,
                  progress=lambda fraction, message: fractions.append(fraction))
    assert max(sizes) == 3 and sum(sizes) == 5 * 5
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_predictor_errors_are_clear(nuclei_cyx):
    def wrong_shape(batch):
        return batch[:, :, ::2, ::2]

    def with_nans(batch):
        out = smooth_predictor(batch)
        out[0, 0, 3, 3] = np.nan
        return out

    with pytest.raises(TilingError, match=r"expected \(B, n_outputs, h, w\)"):
        predict_tiled(nuclei_cyx, wrong_shape, 1, tile_size=128)
    with pytest.raises(TilingError, match="n_outputs"):
        predict_tiled(nuclei_cyx, smooth_predictor, 3, tile_size=128)
    with pytest.raises(WorkbenchError, match="non-finite"):
        predict_tiled(nuclei_cyx, with_nans, 2, tile_size=128)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"overlap": 1.5}, "overlap"),
        ({"overlap": 128}, "smaller than `tile_size`"),
        ({"tile_size": 0}, "tile_size"),
        ({"halo": -1}, "halo"),
        ({"window": "bartlett"}, "spline"),
        ({"edge": "wrap"}, "reflect.*clip"),
        ({"out": np.zeros((2, 512, 511), np.float32)}, "shape"),
        ({"out": np.zeros((2, 512, 512), np.uint8)}, "floating"),
    ],
)
def test_bad_arguments_name_the_argument(nuclei_cyx, kwargs, message):
    with pytest.raises(TilingError, match=message):
        predict_tiled(nuclei_cyx, smooth_predictor, 2, **{"tile_size": 128, **kwargs})


def test_image_must_be_cyx(nuclei_cyx):
    with pytest.raises(TilingError, match="CYX"):
        predict_tiled(nuclei_cyx[None], smooth_predictor, 2)


class LazyImage:
    """A generated image that exists only as tiles: records every slice requested."""

    dtype = np.dtype(np.uint16)

    def __init__(self, height, width):
        self.shape = (1, height, width)
        self.largest_read = 0

    def __getitem__(self, key):
        _, rows, cols = key
        y = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None]
        x = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :]
        tile = (100 + 50 * np.sin(y / 7) * np.cos(x / 11)).astype(np.uint16)[None]
        self.largest_read = max(self.largest_read, tile.size)
        return tile


class DiscardingOut:
    """An output sink that keeps nothing: only checks writes and records the largest."""

    dtype = np.dtype(np.float32)

    def __init__(self, shape):
        self.shape = shape
        self.largest_write = 0
        self.written = 0

    def __setitem__(self, key, value):
        self.largest_write = max(self.largest_write, value.size)
        self.written += value.size


def _peak_bytes(size, tile_size=256):
    image, out = LazyImage(size, size), DiscardingOut((2, size, size))

    def predictor(batch):
        return np.concatenate([batch / 255.0, 1 - batch / 255.0], axis=1)

    tracemalloc.start()
    try:
        predict_tiled(image, predictor, 2, tile_size=tile_size, overlap=64, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.written == 2 * size * size  # every output pixel written exactly once
    return peak, image.largest_read, out.largest_write


def test_memory_does_not_grow_with_image_size():
    small_peak, small_read, small_write = _peak_bytes(1000)
    large_peak, large_read, large_write = _peak_bytes(4000)
    # Reads and writes are one tile at a time, whatever the image size.
    assert small_read == large_read == 256 * 256
    assert large_write <= 2 * 256 * 256
    # 16x the pixels: the only growth allowed is the carry strip, (K + 1, overlap, X) float32;
    # 4000 px take 20 steps of 188, so neighbours overlap by 68 rather than 64.
    carry_growth = (2 + 1) * 68 * 4000 * 4
    assert large_peak - small_peak < carry_growth + 1_000_000
    # About 8 MB, mostly one batch and the predictor's temporaries; the output is 128 MB.
    assert large_peak < 0.1 * (2 * 4000 * 4000 * 4)
