"""Vendor formats in: a CZI written by pylibCZIrw opens lazily with its channels and pixel size."""

import numpy as np
import pytest
from pylibCZIrw import czi as pyczi

from workbench.errors import WorkbenchError
from workbench.store import Project, open_image


@pytest.fixture()
def czi_file(tmp_path, nuclei_image):
    """A 3-slice, 2-channel CZI made from the real nuclei image, as ZEN stores one."""
    volume = np.stack([np.stack([np.roll(nuclei_image, 7 * z, axis=1), nuclei_image[::-1] // (z + 1)])
                       for z in range(3)]).astype(np.uint16)
    path = tmp_path / "nuclei.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for z in range(volume.shape[0]):
            for c in range(volume.shape[1]):
                writer.write(data=volume[z, c], plane={"Z": z, "C": c, "T": 0})
        # CZI metadata holds distances in metres (ZEN writes 3.25e-07 for 0.325 µm).
        writer.write_metadata(document_name="nuclei", channel_names={0: "DAPI", 1: "GFP"},
                              scale_x=0.325e-6, scale_y=0.325e-6, scale_z=1e-6)
    return path, volume


def test_czi_opens_with_channels_pixel_size_and_exact_pixels(czi_file):
    path, volume = czi_file
    source = open_image(path)
    assert source.name == "nuclei"
    assert source.axes == "ZCYX" and source.shape == volume.shape and source.dtype == np.uint16
    assert source.channel_names == ("DAPI", "GFP")
    assert source.pixel_size == pytest.approx((0.325, 0.325))
    np.testing.assert_array_equal(source[...], volume)


def test_czi_reads_only_the_region_asked_for(czi_file):
    path, volume = czi_file
    source = open_image(path)
    reads = []
    reader = source.raw.reader
    original = reader.read

    def counting_read(*args, **kwargs):
        reads.append(kwargs["roi"])
        return original(*args, **kwargs)

    reader.read = counting_read
    block = source[1, :, 100:164, 200:232]
    np.testing.assert_array_equal(block, volume[1, :, 100:164, 200:232])
    assert len(reads) == 2 and all(roi[2:] == (32, 64) for roi in reads)  # two planes, 32 x 64 pixels each
    np.testing.assert_array_equal(source.plane(2)[1, ::4, ::4], volume[2, 1, ::4, ::4])


def test_czi_goes_into_a_project(czi_file, tmp_path):
    path, volume = czi_file
    project = Project.create(tmp_path / "p", classes=["background", "nucleus"])
    name = project.add_image(path)
    info = project.image_info(name)
    assert info.axes == "ZCYX" and tuple(info.shape) == volume.shape
    assert info.pixel_size == pytest.approx([0.325, 0.325])
    np.testing.assert_array_equal(project.image(name)[...], volume)


@pytest.mark.parametrize("suffix", [".czi", ".nd2", ".lif"])
def test_damaged_vendor_files_give_one_error(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a microscope file" * 20)
    with pytest.raises(WorkbenchError, match=f"is not an image the workbench can read .*{suffix}"):
        open_image(path)


def test_cli_add_of_a_damaged_czi_is_one_error_line(tmp_path, capsys):
    from workbench.cli import main

    Project.create(tmp_path / "p", classes=["background", "nucleus"])
    (tmp_path / "bad.czi").write_bytes(b"\0" * 64)
    assert main(["add", str(tmp_path / "p"), str(tmp_path / "bad.czi")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bad.czi is not an image the workbench can read")
