"""Zoom pyramids in the store, viewport geometry and viewport rendering."""

import numpy as np
import pytest

from workbench.annotate import _pyramid as pyr
from workbench.errors import WorkbenchError
from workbench.store import Project
from workbench.annotate import (ChannelDisplay, NearestPyramid, auto_contrast, build_pyramid,
                               default_channel_displays, ensure_pyramid, open_pyramid, pyramid_factors,
                               render_image)
from workbench.annotate import Viewport


@pytest.fixture()
def nuclei_project(tmp_path, nuclei_image):
    project = Project.create(tmp_path / "p", mode="instance", classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei")
    return project


def test_factors_stop_at_thumbnail_size():
    assert pyramid_factors((512, 512)) == [2]
    assert pyramid_factors((256, 256)) == []
    assert pyramid_factors((10_000, 10_000)) == [2, 4, 8, 16, 32, 64]
    assert pyramid_factors((300, 5000)) == [2, 4, 8, 16, 32]


def test_pyramid_levels_are_block_means_of_the_real_image(nuclei_project, nuclei_image):
    pyramid = build_pyramid(nuclei_project, "nuclei", min_size=64)
    assert pyramid.factors == [1, 2, 4, 8]
    level2 = np.asarray(pyramid.level(2)[...])
    expected = nuclei_image.astype(np.float64).reshape(256, 2, 256, 2).mean(axis=(1, 3))
    assert level2.dtype == np.uint16
    assert np.abs(level2 - expected).max() <= 0.5
    level8 = np.asarray(pyramid.level(8)[...])
    assert level8.shape == (64, 64)
    assert abs(level8.astype(float).mean() - nuclei_image.mean()) < 1.0
    stored = nuclei_project.zarr_group("nuclei")["pyramid/1"]
    assert stored.shape == (256, 256) and stored.attrs["factor"] == 2


def test_build_is_block_by_block_and_matches_one_shot(tmp_path, nuclei_image, monkeypatch):
    project = Project.create(tmp_path / "p", classes=["background", "cell"])
    odd = nuclei_image[:301, :457]  # odd sizes exercise the edge padding
    project.add_image(odd, name="odd")
    one_shot = np.asarray(build_pyramid(project, "odd", min_size=32).level(4)[...])
    reads = []
    original = pyr._downsample_mean

    def spy(block):
        reads.append(block.shape)
        return original(block)

    monkeypatch.setattr(pyr, "BUILD_BLOCK", 40)
    monkeypatch.setattr(pyr, "_downsample_mean", spy)
    blocked = np.asarray(build_pyramid(project, "odd", min_size=32).level(4)[...])
    assert blocked.shape == (76, 115)
    np.testing.assert_array_equal(blocked, one_shot)
    assert max(s[-1] for s in reads) <= 80 and len(reads) > 10


def test_outdated_or_unfinished_pyramid_is_rebuilt(nuclei_project):
    assert open_pyramid(nuclei_project, "nuclei") is None
    ensure_pyramid(nuclei_project, "nuclei")
    assert open_pyramid(nuclei_project, "nuclei") is not None
    nuclei_project.zarr_group("nuclei")["pyramid"].attrs["complete"] = False  # as after a crash mid-build
    assert open_pyramid(nuclei_project, "nuclei") is None
    assert ensure_pyramid(nuclei_project, "nuclei").factors == [1, 2]


def test_multichannel_float_zstack_pyramid(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.random((3, 2, 600, 520)).astype(np.float32)
    project = Project.create(tmp_path / "p", classes=["background", "cell"])
    project.add_image(stack, name="stack", axes="ZCYX")
    pyramid = ensure_pyramid(project, "stack")
    assert pyramid.factors == [1, 2, 4]
    level = pyramid.level(2)
    assert level.axes == "ZCYX" and level.shape == (3, 2, 300, 260) and level.dtype == np.float32
    np.testing.assert_allclose(level[2, 1, 10, 20], stack[2, 1, 20:22, 40:42].mean(), rtol=1e-5)
    displays = default_channel_displays(pyramid, z=1)
    assert [d.color for d in displays] == ["#ff00ff", "#00ff00"]
    assert all(0 <= d.low < d.high <= 1 for d in displays)


@pytest.mark.parametrize("zoom,origin", [(1.0, (0.0, 0.0)), (2.0, (10.25, 3.5)), (3.7, (-20.0, 100.3)),
                                         (0.75, (5.0, -40.0)), (0.3, (-100.0, -80.0))])
def test_viewport_round_trip_and_known_points(zoom, origin):
    vp = Viewport(640, 480, zoom=zoom, origin_y=origin[0], origin_x=origin[1])
    assert vp.canvas_to_image(0, 0) == pytest.approx(origin)
    # One canvas pixel to the right is 1 / zoom image pixels to the right.
    assert vp.canvas_to_image(zoom, 0) == pytest.approx((origin[0], origin[1] + 1))
    rng = np.random.default_rng(1)
    for cx, cy in rng.uniform(-50, 700, size=(50, 2)):
        y, x = vp.canvas_to_image(cx, cy)
        assert vp.image_to_canvas(y, x) == pytest.approx((cx, cy))
    # The centre of image pixel (i, j) maps back into pixel (i, j).
    for i, j in [(0, 0), (17, 33), (200, 5)]:
        cx, cy = vp.image_to_canvas(i + 0.5, j + 0.5)
        assert vp.canvas_to_pixel(cx, cy) == (i, j)


def test_viewport_zoom_keeps_anchor_and_pan_moves_by_canvas_pixels():
    vp = Viewport(800, 600)
    vp.fit((512, 512))
    assert vp.zoom == pytest.approx(600 / 512)
    assert vp.center == pytest.approx((256, 256))
    before = vp.canvas_to_image(123, 456)
    vp.zoom_at(2.5, 123, 456)
    assert vp.canvas_to_image(123, 456) == pytest.approx(before)
    vp.pan(30, -10)
    assert vp.canvas_to_image(153, 446) == pytest.approx(before)
    vp.set_view((100, 200), 4)
    assert vp.center == pytest.approx((100, 200))
    with pytest.raises(WorkbenchError, match="zoom must be a positive number"):
        vp.set_view((0, 0), -1)


@pytest.mark.parametrize("zoom,origin", [(1.0, (0, 0)), (2.0, (100.5, 50.25)), (3.3, (-7, -11)),
                                         (0.8, (30, 20))])
def test_rendered_canvas_pixels_show_exactly_the_image_pixel_under_them(tmp_path, zoom, origin):
    yy, xx = np.mgrid[0:400, 0:500]
    image = ((xx * 7 + yy * 13) % 256).astype(np.uint8)
    project = Project.create(tmp_path / "p", classes=["background", "cell"])
    project.add_image(image, name="ramp")
    pyramid = ensure_pyramid(project, "ramp")
    vp = Viewport(320, 240, zoom=zoom, origin_y=origin[0], origin_x=origin[1])
    picture = render_image(pyramid, vp, [ChannelDisplay("#ffffff", True, 0, 255)])
    assert picture.shape == (240, 320, 3) and picture.dtype == np.uint8
    for r in range(0, 240, 7):
        for c in range(0, 320, 11):
            i, j = vp.canvas_to_pixel(c + 0.5, r + 0.5)
            if 0 <= i < 400 and 0 <= j < 500:
                assert picture[r, c, 0] == image[i, j], (r, c, i, j)
            else:
                assert tuple(picture[r, c]) == pyr.BACKDROP


def test_render_picks_coarse_level_and_reads_only_the_viewport(tmp_path):
    rng = np.random.default_rng(2)
    big = rng.integers(0, 4000, size=(3000, 2800), dtype=np.uint16)
    project = Project.create(tmp_path / "p", classes=["background", "cell"])
    project.add_image(big, name="big")
    pyramid = ensure_pyramid(project, "big")
    assert pyramid.factors == [1, 2, 4, 8, 16]
    vp = Viewport(400, 300)
    vp.fit(pyramid.shape)
    assert vp.level_for(pyramid.factors) == 8  # zoom 0.1: one level-8 pixel per canvas pixel or more
    vp.set_view((1500, 1400), 4.0)
    assert vp.level_for(pyramid.factors) == 1
    rows, cols, _, _, region = vp.sample_grid(pyramid.shape, 1)
    assert (region[0].stop - region[0].start) * (region[1].stop - region[1].start) <= 101 * 76
    displays = default_channel_displays(pyramid)
    picture = render_image(pyramid, vp, displays)
    assert picture.std() > 10  # noise, not a blank canvas


def test_channel_colours_visibility_and_contrast(tmp_path):
    image = np.zeros((2, 64, 64), np.uint16)
    image[0, :, :32] = 1000
    image[1, :, 32:] = 3000
    project = Project.create(tmp_path / "p", classes=["background", "cell"])
    project.add_image(image, name="two", axes="CYX")
    pyramid = ensure_pyramid(project, "two")
    vp = Viewport(64, 64)
    channels = [ChannelDisplay("#ff0000", True, 0, 1000), ChannelDisplay("#00ff00", True, 0, 6000)]
    picture = render_image(pyramid, vp, channels)
    assert tuple(picture[10, 5]) == (255, 0, 0)
    assert tuple(picture[10, 50]) == (0, 128, 0)
    channels[0].visible = False
    assert tuple(render_image(pyramid, vp, channels)[10, 5]) == (0, 0, 0)
    with pytest.raises(WorkbenchError, match="one ChannelDisplay per channel"):
        render_image(pyramid, vp, channels[:1])
    assert auto_contrast(np.arange(1000.0)) == pytest.approx((4.995, 997.002), abs=1e-3)
    low, high = auto_contrast(np.full((5, 5), 7.0))
    assert high > low == 7.0


def test_nearest_pyramid_tracks_edits():
    plane = np.zeros((300, 500), np.uint8)
    plane[100:140, 200:260] = 3
    pyramid = NearestPyramid(lambda ys, xs: plane[ys, xs], plane.shape, [1, 2, 4])
    np.testing.assert_array_equal(pyramid.levels[2], plane[::2, ::2])
    np.testing.assert_array_equal(pyramid.levels[4], plane[::4, ::4])
    plane[7:33, 51:90] = 2
    pyramid.update((slice(7, 33), slice(51, 90)), plane[7:33, 51:90])
    np.testing.assert_array_equal(pyramid.levels[2], plane[::2, ::2])
    np.testing.assert_array_equal(pyramid.levels[4], plane[::4, ::4])
