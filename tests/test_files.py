"""A user's own files read in their native shape: npz layouts, ImageFolder trees, conform."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pfednas.data import DataError
from pfednas.data.files import (
    FileImages,
    conform,
    file_stamp,
    read_files,
    read_image_folder,
    read_npz,
)

RNG = np.random.default_rng(0)
NCHW = RNG.integers(0, 256, (6, 3, 5, 5), dtype=np.uint8)  # six RGB 5x5 images
LABELS = np.array([0, 1, 2, 0, 1, 4])  # label 3 unused: still a class


def _png(path: Path, side: int, mode: str, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((side, side, 3), level, dtype=np.uint8)
    pixels[..., 0] = 255 - level  # a colour image's channels differ
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhw"])
def test_npz_layouts_read_as_nchw(tmp_path: Path, layout: str) -> None:
    # Prepare
    stored = {"nchw": NCHW, "nhwc": NCHW.transpose(0, 2, 3, 1), "nhw": NCHW[:, 0]}[layout]
    np.savez(tmp_path / "data.npz", x=stored, y=LABELS)

    # Execute
    data = read_files(tmp_path / "data.npz")

    # Verify
    expected = NCHW[:, :1] if layout == "nhw" else NCHW
    np.testing.assert_array_equal(data.images, expected)
    np.testing.assert_array_equal(data.labels, LABELS)
    assert data.labels.dtype == np.int64 and data.clients is None
    assert (data.num_classes, data.in_channels, data.image_size) == (5, expected.shape[1], 5)
    assert data.classes == ("0", "1", "2", "3", "4")
    assert data.scale == 255.0 and not data.images.flags.writeable


def test_folder_with_data_npz_and_float_scale(tmp_path: Path) -> None:
    # Prepare
    x = RNG.random((4, 1, 3, 3))
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(4))

    # Execute
    data = read_files(tmp_path)

    # Verify
    assert data.scale == 1.0
    np.testing.assert_array_equal(data.images, x)


def test_natural_ids_are_read(tmp_path: Path) -> None:
    # Prepare
    writers = np.array([7, 7, 3, 3, 3, 9], dtype=np.int32)
    np.savez(tmp_path / "a.npz", x=NCHW, y=LABELS, client=writers)
    np.savez(tmp_path / "b.npz", x=NCHW, y=LABELS, writer=writers)

    # Execute
    default = read_npz(tmp_path / "a.npz")
    named = read_npz(tmp_path / "b.npz", client_key="writer")

    # Verify
    for data in (default, named):
        assert data.clients is not None and data.clients.dtype == np.int64
        np.testing.assert_array_equal(data.clients, writers)


def test_bad_npz_errors_name_the_file(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "user.npz"
    cases = {
        "'writer'": ({"x": NCHW, "y": LABELS}, "writer"),  # a named key must be there
        r"\(5,\)": ({"x": NCHW, "y": LABELS[:5]}, "client"),  # x and y disagree in length
        "'y'": ({"x": NCHW}, "client"),
        ">= 0": ({"x": NCHW, "y": -LABELS}, "client"),
        "integers": ({"x": NCHW, "y": LABELS.astype(float)}, "client"),
        "client must be": ({"x": NCHW, "y": LABELS, "client": np.zeros(4, int)}, "client"),
        "square": ({"x": NCHW[:, :, :4], "y": LABELS}, "client"),
    }
    for match, (arrays, key) in cases.items():
        np.savez(path, **arrays)  # type: ignore[arg-type]

        # Execute / Verify
        with pytest.raises(DataError, match=match) as err:
            read_npz(path, client_key=key)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_image_folder_takes_most_common_side_and_colour(tmp_path: Path) -> None:
    # Prepare: grey and colour PNGs, four 6x6 and two 9x9
    colour = tmp_path / "colour"
    for i, (name, side, mode) in enumerate([("cat", 6, "L"), ("cat", 9, "L"), ("ant", 6, "RGB"),
                                            ("ant", 6, "L"), ("bee", 9, "RGB"),
                                            ("bee", 6, "L")]):
        _png(colour / name / f"{i}.png", side, mode, level=40 * i)
    (colour / "dog").mkdir()  # an empty class still counts
    _png(tmp_path / "grey" / "3" / "a.png", 4, "L", level=9)
    _png(tmp_path / "grey" / "0" / "b.png", 4, "L", level=9)

    # Execute
    data = read_image_folder(colour)
    grey = read_image_folder(tmp_path / "grey")

    # Verify
    assert data.images.shape == (6, 3, 6, 6) and data.images.dtype == np.uint8
    assert data.classes == ("ant", "bee", "cat", "dog")
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]  # sorted rank, files in name order
    assert data.images[0, :, 0, 0].tolist() == [255 - 80, 80, 80]  # ant/2.png, RGB
    ant_grey = np.asarray(Image.open(colour / "ant" / "3.png"))  # grey: three equal channels
    np.testing.assert_array_equal(data.images[1], np.stack([ant_grey] * 3))
    cat_large = data.images[5]  # cat/1.png: 9x9, resized to 6x6
    assert (cat_large == cat_large[0, 0, 0]).all()
    assert grey.images.shape == (2, 1, 4, 4)
    assert grey.labels.tolist() == [0, 3] and grey.classes == ("0", "1", "2", "3")


def test_image_folder_side_tie_takes_the_larger(tmp_path: Path) -> None:
    # Prepare
    _png(tmp_path / "a" / "small.png", 4, "L", level=10)
    _png(tmp_path / "a" / "large.png", 8, "L", level=10)

    # Execute
    data = read_files(tmp_path)

    # Verify
    assert data.images.shape == (2, 1, 8, 8)


def test_folder_read_at_a_shape_converts_each_file_once(tmp_path: Path) -> None:
    # Prepare: colour images of two sides, read as grey 4x4
    for i, side in enumerate((6, 6, 9)):
        _png(tmp_path / "a" / f"{i}.png", side, "RGB", level=50 * i)

    # Execute
    data = read_files(tmp_path, channels=1, size=4)

    # Verify: each file converted and resized by PIL from its own size (9 -> 4, not 9 -> 6 -> 4)
    for i in range(3):
        with Image.open(tmp_path / "a" / f"{i}.png") as img:
            expected = img.convert("L").resize((4, 4), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(data.images[i, 0], np.asarray(expected))
    assert data.images.shape == (3, 1, 4, 4)


def test_bad_folders_name_the_problem(tmp_path: Path) -> None:
    # Prepare
    broken = tmp_path / "silo" / "cat" / "broken.png"
    _png(tmp_path / "silo" / "cat" / "fine.png", 4, "L", level=10)
    broken.write_bytes(b"\x89PNG not really a png" * 4)
    (tmp_path / "empty").mkdir()

    # Execute / Verify
    with pytest.raises(DataError, match="broken.png") as err:
        read_files(tmp_path / "silo")
    assert str(broken) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="class sub-folders"):
        read_files(tmp_path / "empty")
    with pytest.raises(DataError, match="missing"):
        read_files(tmp_path / "missing")


def test_conform_changes_channels_and_size() -> None:
    # Prepare
    rgb = FileImages(images=NCHW, labels=LABELS.copy(), scale=255.0, clients=None,
                     classes=tuple("01234"))
    flat = FileImages(images=np.full((2, 1, 4, 4), 0.5), labels=np.zeros(2, np.int64),
                      scale=1.0, clients=None, classes=("0",))

    # Execute
    grey = conform(rgb, channels=1, size=10)
    colour = conform(flat, channels=3, size=2)

    # Verify
    assert grey.images.shape == (6, 1, 10, 10) and grey.images.dtype == np.uint8
    assert grey.scale == 255.0 and grey.labels is rgb.labels
    luma = np.tensordot([0.299, 0.587, 0.114], NCHW[0].astype(np.float32), axes=1)
    resized = Image.fromarray(luma.round().astype(np.uint8)).resize((10, 10),
                                                                    Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(grey.images[0, 0], np.asarray(resized))
    assert colour.images.shape == (2, 3, 2, 2) and colour.images.dtype == np.float32
    np.testing.assert_allclose(colour.images, 0.5, atol=1e-6)
    assert colour.scale == 1.0
    assert conform(rgb, channels=3, size=5) is rgb


def test_reads_are_cached_until_a_file_changes(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "data.npz"
    np.savez(path, x=NCHW, y=LABELS)
    first = read_files(path)
    stamp = file_stamp(path)

    # Execute
    again = read_files(tmp_path / "." / "data.npz")
    np.savez(path, x=NCHW[:3], y=LABELS[:3])
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # a later write, whatever the clock
    changed = read_files(path)

    # Verify
    assert again is first
    assert len(changed) == 3 and file_stamp(tmp_path) >= stamp + 10**9
