"""The annotator driven as ipycanvas would drive it, with the labels checked in the project store."""

import time

import numpy as np
import pytest

from workbench_widgets._render import BOUNDARY_COLOR, OUTLINE_COLOR
from workbench_widgets.annotator import STROKE, Annotator
from workbench.errors import WorkbenchError
from workbench.annotate import LabelEditor, rasterize_lasso, rasterize_stroke
from workbench.store import Project
from workbench.annotate import hex_to_rgb


@pytest.fixture()
def nuclei_project(tmp_path, nuclei_image):
    project = Project.create(tmp_path / "p", mode="instance", classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei")
    return project


@pytest.fixture()
def annotator(nuclei_project):
    return Annotator(nuclei_project, width=400, height=300, save_delay=0)


def stored(project, name="nuclei"):
    """Labels as they are on disk, read through a freshly opened project."""
    return Project.open(project.path).read_labels(name)


def drag(annotator, canvas_points):
    (x0, y0), *rest = canvas_points
    annotator.handle_mouse_down(x0, y0)
    for x, y in rest[:-1]:
        annotator.handle_mouse_move(x, y)
    annotator.handle_mouse_up(*rest[-1])


def test_mouse_stroke_lands_in_the_store_at_the_pixels_under_it(annotator, nuclei_project):
    annotator.set_view((250.0, 300.0), 3.7)
    annotator.pan_by(13.3, -7.1)
    annotator.brush_size = 5
    canvas_points = [(100.2, 150.7), (140.0, 160.0), (180.5, 150.1), (220.0, 140.0)]
    drag(annotator, canvas_points)
    labels = stored(nuclei_project)
    image_points = [annotator.viewport.canvas_to_image(x, y) for x, y in canvas_points]
    region, mask = rasterize_stroke(image_points, 5, labels.shape)
    expected = np.zeros_like(labels)
    expected[region][mask] = 2
    np.testing.assert_array_equal(labels, expected)
    for x, y in canvas_points:  # the pixel under every mouse position is painted
        assert labels[annotator.viewport.canvas_to_pixel(x, y)] == 2
    assert annotator.frames["labels"][160, 140, 3] > 0  # and shown in the label overlay


def test_events_through_ipycanvas_message_handler(annotator, nuclei_project):
    """The same path a browser message takes: MultiCanvas -> top canvas -> our handlers."""
    top = annotator.canvas[STROKE]
    annotator.set_view((100.0, 100.0), 2.0)
    for event, x, y in [("mouse_down", 50, 60), ("mouse_move", 80, 60), ("mouse_up", 110, 60)]:
        top._handle_frontend_event(None, {"event": event, "x": x, "y": y}, [])
    row, col = annotator.viewport.canvas_to_pixel(80, 60)
    assert stored(nuclei_project)[row, col] == 2
    rendered = annotator.render_count
    top._handle_frontend_event(None, {"event": "client_ready"}, [])  # Voila: page connected late
    assert annotator.render_count == rendered + 1
    top._handle_frontend_event(None, {"event": "key_down", "key": "z", "shift_key": False,
                                      "ctrl_key": False, "meta_key": False}, [])
    assert not stored(nuclei_project).any()


def test_erase_fill_and_several_undo_steps(annotator, nuclei_project):
    annotator.paint([(50, 50), (50, 150)], class_value=2, diameter=11)
    annotator.paint([(100, 60), (100, 160)], class_value=1, diameter=7)
    square = [(200, 200), (200, 260), (260, 260), (260, 200)]
    annotator.fill(square, class_value=2)
    annotator.erase([(50, 100)], diameter=9)
    labels = stored(nuclei_project)
    assert labels[230, 230] == 2 and labels[201, 201] == 2 and labels[199, 230] == 0
    region, lasso = rasterize_lasso(square, labels.shape)
    assert region == (slice(200, 261), slice(200, 261))
    assert lasso[:60, :60].all() and lasso.sum() == 60 * 60 + 3  # centres inside, plus the corners' pixels
    np.testing.assert_array_equal(labels[region] == 2, lasso)
    assert labels[50, 100] == 0 and labels[50, 60] == 2 and labels[100, 100] == 1
    annotator.undo()  # the eraser stroke
    assert stored(nuclei_project)[50, 100] == 2
    annotator.undo()
    assert stored(nuclei_project)[230, 230] == 0
    annotator.undo()
    annotator.undo()
    assert not stored(nuclei_project).any()
    assert annotator.undo() is None
    annotator.redo()
    annotator.redo()
    labels = stored(nuclei_project)
    assert labels[50, 60] == 2 and labels[100, 100] == 1 and labels[230, 230] == 0


def test_lasso_and_eraser_tools_with_the_mouse(annotator, nuclei_project):
    annotator.set_view((256.0, 256.0), 1.0)
    annotator.handle_key_down("l")
    assert annotator.tool == "fill"
    drag(annotator, [(100, 100), (200, 100), (200, 200), (100, 200), (100, 101)])
    labels = stored(nuclei_project)
    y, x = annotator.viewport.canvas_to_pixel(150, 150)
    assert labels[y, x] == 2
    assert (labels == 2).sum() == pytest.approx(100 * 100, rel=0.05)
    annotator.handle_key_down("e")
    annotator.brush_size = 20
    drag(annotator, [(150, 150), (150, 151)])
    assert stored(nuclei_project)[y, x] == 0


def test_keyboard_shortcuts(annotator):
    keys = annotator.handle_key_down
    keys("e")
    assert annotator.tool == "eraser"
    keys("b")
    assert annotator.tool == "brush"
    keys("1")
    assert annotator.class_value == 1
    keys("2")
    assert annotator.class_value == 2
    keys("7")  # no seventh class: a message, not an exception
    assert annotator.class_value == 2 and "class value must be 1..2" in annotator.controls.status.value
    annotator.brush_size = 10
    keys("]")
    assert annotator.brush_size == 12
    keys("[")
    keys("[")
    assert annotator.brush_size < 12
    zoom = annotator.viewport.zoom
    keys("+")
    assert annotator.viewport.zoom == pytest.approx(zoom * 1.5)
    keys("f")
    assert annotator.viewport.zoom == pytest.approx(zoom)
    keys("p")
    assert annotator.tool == "pan"


def test_pan_drag_wheel_zoom_and_space_pan(annotator, nuclei_project):
    annotator.set_view((256.0, 256.0), 2.0)
    annotator.set_tool("pan")
    anchor = annotator.viewport.canvas_to_image(100, 100)
    drag(annotator, [(100, 100), (130, 110), (160, 120)])
    assert annotator.viewport.canvas_to_image(160, 120) == pytest.approx(anchor)
    assert not stored(nuclei_project).any()  # panning paints nothing
    annotator.handle_mouse_move(200, 150)
    under_mouse = annotator.viewport.canvas_to_image(200, 150)
    annotator.handle_wheel(0, -300)  # one doubling towards the user
    assert annotator.viewport.zoom == pytest.approx(4.0)
    assert annotator.viewport.canvas_to_image(200, 150) == pytest.approx(under_mouse)
    annotator.set_tool("brush")
    annotator.handle_key_down(" ")
    before = annotator.viewport.center
    drag(annotator, [(50, 50), (90, 50)])
    assert annotator.viewport.center != pytest.approx(before)
    assert not stored(nuclei_project).any()
    drag(annotator, [(50, 50), (90, 50)])  # space armed one drag only: this one paints
    assert stored(nuclei_project).any()


def test_instance_mode_shows_derived_boundaries(annotator, nuclei_project):
    annotator.set_view((256.0, 256.0), 2.0)
    annotator.opacity = 0.5
    annotator.paint([(256, 256)], class_value=2, diameter=41)
    frame = annotator.frames["labels"]
    cx, cy = annotator.viewport.image_to_canvas(256.5, 256.5)
    inner = frame[int(cy), int(cx)]
    assert tuple(inner[:3]) == hex_to_rgb(nuclei_project.class_colors[1]) and inner[3] == 128
    ex, ey = annotator.viewport.image_to_canvas(256.5, 236.5)  # leftmost column of the disc
    assert tuple(frame[int(ey), int(ex), :3]) == BOUNDARY_COLOR
    annotator.controls.show_boundaries.value = False
    assert tuple(annotator.frames["labels"][int(ey), int(ex), :3]) == hex_to_rgb(nuclei_project.class_colors[1])
    annotator.controls.show_labels.value = False
    assert not annotator.frames["labels"][..., 3].any()


def test_shown_boundary_follows_the_painted_objects_size(annotator, nuclei_project):
    """A small painted nucleus gets a 1-px outline and keeps its interior on screen; a large one 3 px."""
    annotator.set_view((100.0, 100.0), 4.0)
    annotator.opacity = 0.5
    annotator.paint([(100, 100)], class_value=2, diameter=11)
    assert nuclei_project.boundary_width == 1
    frame = annotator.frames["labels"]
    left = int(np.flatnonzero(stored(nuclei_project)[100] == 2)[0])
    colours = [tuple(frame[int(y), int(x), :3]) for x, y in
               (annotator.viewport.image_to_canvas(left + i + 0.5, 100.5) for i in range(3))]
    assert colours[0] == BOUNDARY_COLOR and colours[1] == colours[2] == hex_to_rgb(nuclei_project.class_colors[1])
    annotator.paint([(300, 300)], class_value=2, diameter=45)
    annotator.paint([(300, 400)], class_value=2, diameter=45)
    assert nuclei_project.boundary_width == 4  # median of 11, 45, 45 px discs: 45 / 12 rounds to 4
    annotator.set_view((100.0, 100.0), 4.0)
    frame = annotator.frames["labels"]
    colours = [tuple(frame[int(y), int(x), :3]) for x, y in
               (annotator.viewport.image_to_canvas(left + i + 0.5, 100.5) for i in range(3))]
    assert colours == [BOUNDARY_COLOR] * 3


def test_prediction_overlays_toggle(annotator, nuclei_project, nuclei_labels):
    assert annotator.controls.prediction.options == (("none", "none"),)
    # A U-Net's prediction: three classes, then its distance map (no class: not part of the uncertainty).
    probs = nuclei_project.create_prediction("nuclei", "probabilities", (4, 512, 512), np.float32)
    p = np.zeros((4, 512, 512), np.float32)
    p[0] = 1.0
    p[:3, :, 256:] = 1 / 3  # right half: as uncertain as it gets
    p[3, :, 256:] = 1.0
    probs[...] = p
    instances = nuclei_project.create_prediction("nuclei", "instances", (512, 512), np.int32)
    instances[...] = nuclei_labels.astype(np.int32)
    nuclei_project.mark_prediction_complete("nuclei")
    options = annotator.refresh_predictions()
    views = [v for _, v in options]
    assert views == ["none", "instance outlines", "uncertainty", "probability:0", "probability:1",
                     "probability:2", "probability:3"]
    assert options[-1][0] == "probability: distance"
    annotator.fit()
    annotator.show_prediction("uncertainty")
    frame = annotator.frames["prediction"]
    left_x, _ = annotator.viewport.image_to_canvas(0, 100)
    right_x, row = annotator.viewport.image_to_canvas(256, 400)
    assert frame[int(row), int(left_x), 3] == 0 and frame[int(row), int(right_x), 3] > 100
    annotator.show_prediction("instance outlines")
    outline = np.all(annotator.frames["prediction"][..., :3] == OUTLINE_COLOR, axis=-1)
    assert outline.sum() > 1000
    annotator.show_prediction(None)
    assert not annotator.frames["prediction"][..., 3].any()
    with pytest.raises(WorkbenchError, match="not available"):
        annotator.show_prediction("classes")


def test_debounced_save_loses_at_most_the_last_stroke(nuclei_project):
    annotator = Annotator(nuclei_project, width=300, height=300, save_delay=0.2)
    annotator.paint([(10, 10), (10, 60)], class_value=2, diameter=5)
    annotator.paint([(30, 10), (30, 60)], class_value=1, diameter=5)
    assert annotator.editor.pending
    assert annotator.labels()[30, 30] == 1  # visible (and paintable over) before it is saved
    deadline = time.time() + 10
    while time.time() < deadline and not stored(nuclei_project)[30, 30]:
        time.sleep(0.05)
    labels = stored(nuclei_project)
    assert labels[10, 30] == 2 and labels[30, 30] == 1
    assert not annotator.editor.pending
    annotator.paint([(60, 10)], class_value=2, diameter=3)
    annotator.close()  # closing saves what is pending
    assert stored(nuclei_project)[60, 10] == 2


def test_saves_only_touched_chunks(tmp_path):
    project = Project.create(tmp_path / "p", classes=["background", "a", "b"])
    project.add_image(np.zeros((1500, 1500), np.uint8), name="blank")
    editor = LabelEditor(project, "blank", save_delay=0)
    writes = []
    original = project.write_labels
    project.write_labels = lambda name, labels, **kw: (writes.append(kw["region"]), original(name, labels, **kw))
    editor.paint([(600, 600), (600, 700)], value=3, diameter=9)
    assert writes == [(slice(512, 1024), slice(512, 1024))]
    assert project.read_labels("blank")[600, 650] == 3


def test_statistics_panel_and_callbacks(annotator, nuclei_project):
    saved, views = [], []
    annotator.on_labels_changed(saved.append)
    annotator.on_view_changed(views.append)
    annotator.paint([(100, 100)], class_value=2, diameter=15)
    annotator.paint([(300, 300)], class_value=2, diameter=15)
    annotator.paint([(200, 50), (200, 400)], class_value=1, diameter=5)
    stats = annotator.statistics
    assert stats["objects"] == 2
    assert stats["pixels"]["nucleus"] == (stored(nuclei_project) == 2).sum()
    from_store = nuclei_project.label_stats("nuclei")
    for key in ("pixels", "objects", "annotated_pixels", "pixels_total"):
        assert stats[key] == from_store[key]
    html = annotator.controls.stats.value
    assert "nucleus" in html and f"{stats['pixels']['nucleus']:,} px" in html and "objects: 2" in html
    assert len(saved) == 3 and saved[0].image == "nuclei" and saved[0].regions == [(slice(0, 512), slice(0, 512))]
    annotator.go_to("nuclei", 400, 100, zoom=4)
    assert annotator.viewport.center == pytest.approx((400.5, 100.5))
    assert views[-1]["zoom"] == 4 and views[-1]["region"][0].start <= 400 < views[-1]["region"][0].stop


def test_multichannel_zstack_float_image(tmp_path, nuclei_image):
    stack = np.stack([np.stack([nuclei_image, nuclei_image[::-1]]) for _ in range(3)]).astype(np.float32)
    stack[1] *= 0.5
    project = Project.create(tmp_path / "p", classes=["background", "cell", "debris"])
    project.add_image(nuclei_image.astype(np.uint8), name="eight", axes="YX")
    project_stack = Project.create(tmp_path / "q", classes=["background", "cell", "debris"])
    project_stack.add_image(stack, name="stack", axes="ZCYX")
    annotator = Annotator(project_stack, width=256, height=256, save_delay=0)
    assert annotator.controls.z.layout.display is None and annotator.controls.z.max == 2
    assert len(annotator.controls.channel_rows) == 2
    annotator.set_view((256.0, 256.0), 1.0)
    first = annotator.frames["image"].copy()
    annotator.set_channel(0, visible=False)
    no_magenta = annotator.frames["image"]
    assert no_magenta[..., 0].max() == 0 and first[..., 0].max() > 0  # channel 0 was magenta
    annotator.set_channel(1, color="#0000ff")
    assert annotator.frames["image"][..., 1].max() == 0 and annotator.frames["image"][..., 2].max() > 0
    annotator.set_channel(0, visible=True, limits=(0.0, 1e9))
    assert annotator.frames["image"][..., 0].max() == 0  # contrast so wide the channel is black
    annotator.auto_contrast()
    assert annotator.frames["image"][..., 0].max() > 0
    annotator.controls.z.value = 2  # the slider, as a user moves it
    assert annotator.z == 2
    annotator.handle_key_down("3")
    annotator.paint([(20, 20)], diameter=5)
    labels = project_stack.read_labels("stack")
    assert labels.shape == (3, 512, 512) and labels[2, 20, 20] == 3 and not labels[:2].any()
    plain = Annotator(project, width=256, height=256, save_delay=0)
    assert plain.controls.z.layout.display == "none" and len(plain.channels) == 1
    assert plain.frames["image"].std() > 5


def test_large_image_renders_from_a_coarse_level(tmp_path):
    rng = np.random.default_rng(3)
    big = rng.integers(0, 255, size=(4100, 4100), dtype=np.uint8)
    project = Project.create(tmp_path / "p", classes=["background", "cell"])
    project.add_image(big, name="big")
    annotator = Annotator(project, width=400, height=400, save_delay=0)
    assert annotator.viewport.level_for(annotator.pyramid.factors) == 8
    annotator.paint([(2000, 2000), (2000, 2600)], class_value=2, diameter=81)
    x, y = annotator.viewport.image_to_canvas(2000, 2300)
    assert annotator.frames["labels"][int(y), int(x), 3] > 0  # the coarse label level was updated
    # Panning stays on the coarse level (how fast it is, benchmarks/bench_annotator.py measures).
    before = np.array(annotator.viewport.center, float)
    for _ in range(5):
        annotator.pan_by(20, 10)
    assert not np.allclose(annotator.viewport.center, before)
    assert annotator.viewport.level_for(annotator.pyramid.factors) == 8


def test_bad_inputs_name_the_fix(annotator, tmp_path):
    with pytest.raises(WorkbenchError, match="no image 'nope'"):
        annotator.open_image("nope")
    with pytest.raises(WorkbenchError, match="tool must be one of"):
        annotator.set_tool("spray")
    with pytest.raises(WorkbenchError, match="non-empty list of \\(y, x\\)"):
        annotator.paint([])
    with pytest.raises(WorkbenchError, match="must be a workbench Project"):
        Annotator("not a project")
    empty = Annotator(Project.create(tmp_path / "empty", classes=["background", "cell"]))
    assert "no images yet" in empty.controls.status.value


def test_zstack_plane_shows_the_derived_3d_boundary(tmp_path, shared_dir):
    import tifffile

    from workbench.store import derive_boundaries

    folder = shared_dir / "data" / "stardist_nuclei_3d"
    project = Project.create(tmp_path / "v", mode="instance", classes=["background", "nucleus"], boundary_width=1)
    project.add_image(tifffile.imread(folder / "image.tif"), name="stack", axes="ZYX")
    project.import_labels("stack", tifffile.imread(folder / "labels.tif"), instances=True)
    labels = project.read_labels("stack")
    caps = derive_boundaries(labels, 1) & ~derive_boundaries(labels, 1, boundaries="per-plane")
    z = int(np.argmax(caps.sum(axis=(1, 2))))
    y, x = np.argwhere(caps[z])[0]
    annotator = Annotator(project, width=256, height=256, save_delay=0)
    annotator.controls.z.value = z
    annotator.set_view((30.0, 28.0), 4.0)
    cx, cy = annotator.viewport.image_to_canvas(y + 0.5, x + 0.5)
    assert tuple(annotator.frames["labels"][int(cy), int(cx), :3]) == BOUNDARY_COLOR  # a face along z
    project.update_settings(boundaries="per-plane")
    annotator.set_z(z)
    assert tuple(annotator.frames["labels"][int(cy), int(cx), :3]) == hex_to_rgb(project.class_colors[1])
