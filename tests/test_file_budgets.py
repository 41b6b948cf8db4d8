"""Files pfednas reads are checked against budgets before anything is allocated from them.

Issue 61, findings 5 and 6: a 1 MB deflated ``finetuned.npz`` inflated to 1.8 GB before a
shape check refused it; an ``.npy`` header claiming 2**45 elements, a spec with
``image_size = 1e5`` or ``num_classes = 1e8``, and a spec JSON nested 200,000 deep gave
tracebacks (or a machine out of memory); image folders were decoded whole, every image
at once. Each crafted file here is refused in one line with exit code 2 (or one
``DataError`` line for the readers of ``dataset=own`` and a silo's ``data.npz``), and the
bombs are refused before they are inflated: the Python heap stays far below what they
claim.
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pfednas.data import DataError
from pfednas.data.files import read_files
from pfednas.delivery.export import main as export_main
from pfednas.delivery.predict import main as predict_main
from pfednas.edge.kept import sha256
from pfednas.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIZE, MAX_NUM_CLASSES
from pfednas.node.data import read_silo
from pfednas.run.inprocess import run_inprocess

RUN = ["method=fedavg", "method.arch=min", "federation.num_clients=2",
       "federation.clients_per_round=2", "federation.local_epochs=1",
       "dataset.max_samples_per_client=100", "federation.num_rounds=1",
       "federation.eval_every=1"]
CLIENT = 0
BOMB_BYTES = 256 << 20  # what the deflated bombs inflate to (about 250 KB on disk)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny digits run (1 x 8 x 8 inputs): its kept folder is what export reads."""
    out = tmp_path_factory.mktemp("budgets") / "run"
    run_inprocess(RUN, out)
    return out


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Client ``CLIENT``'s ONNX export of ``run`` (its model and the spec beside it), made
    once: each test crafts a copy."""
    out = tmp_path_factory.mktemp("budgets") / "export"
    assert export_main([str(run), "--client", str(CLIENT), "--format", "onnx", "--no-measure",
                        "--out", str(out)]) == 0
    return out


def one_line(code: int, err: str) -> str:
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def export_error(capsys: pytest.CaptureFixture[str], run: Path, out: Path) -> str:
    code = export_main([str(run), "--client", str(CLIENT), "--no-measure", "--out", str(out)])
    return one_line(code, capsys.readouterr().err)


def predict_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = predict_main(list(args))
    return one_line(code, capsys.readouterr().err)


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    return out.getvalue()


def write_npz(path: Path, entries: dict[str, bytes | Callable[[Any], None]]) -> Path:
    """A zip of ``name.npy`` entries, deflated: bytes as given, or written by a callable."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            if isinstance(content, bytes):
                archive.writestr(f"{name}.npy", content)
            else:
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    content(member)
    return path


def inflating(nbytes: int) -> Callable[[Any], None]:
    """An entry whose header and data are those of ``nbytes`` zeros: deflates ~1000:1."""
    def write(member: Any) -> None:
        member.write(npy_header((nbytes,)))
        block = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            member.write(block)
    return write


def claiming(shape: tuple[int, ...]) -> bytes:
    return npy_header(shape) + bytes(64)  # a header, and almost no data


def crafted_weights(run: Path, entry: bytes | Callable[[Any], None]) -> None:
    """Client 0's finetuned.npz with its first array replaced by ``entry``, the spec's
    hash made to match (a crafted folder, not a damaged one)."""
    folder = run / "models" / f"client_{CLIENT}"
    weights = folder / "finetuned.npz"
    with np.load(weights) as data:
        names = list(data.files)
    write_npz(weights, {names[0]: entry, **{n: claiming((1,)) for n in names[1:]}})
    spec = json.loads((folder / "spec.json").read_text())
    spec["models"]["finetuned"]["sha256"] = sha256(weights)
    (folder / "spec.json").write_text(json.dumps(spec))


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def heap_peak(action: Callable[[], Any]) -> int:
    """The Python heap's peak (numpy's arrays included) while ``action`` runs."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peak_and_error(capsys: pytest.CaptureFixture[str], action: Callable[[], int]
                   ) -> tuple[int, str]:
    """The heap's peak while ``action`` (a command's ``main``) runs, and its one line."""
    code: list[int] = []
    peak = heap_peak(lambda: code.append(action()))
    return peak, one_line(code[0], capsys.readouterr().err)


# -- finetuned.npz (export) ----------------------------------------------------------------------
@pytest.mark.parametrize("bomb", ["header_2_45", "deflated"])
def test_a_weights_bomb_is_refused_before_it_is_inflated(
        bomb: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: client 0's weights, one array replaced by a bomb
    crafted = copy_run(run, tmp_path / "run")
    crafted_weights(crafted, claiming((2**45,)) if bomb == "header_2_45"
                    else inflating(BOMB_BYTES))

    # Execute
    peak, err = peak_and_error(capsys, lambda: export_main([
        str(crafted), "--client", str(CLIENT), "--no-measure", "--out", str(tmp_path / "out")]))

    # Assert: one line naming the size against the network's own; nothing inflated
    assert "more than the" in err and "allowed" in err
    assert peak < 32 << 20, peak
    assert not (tmp_path / "out" / f"client_{CLIENT}.pt").exists()


# -- predict --data, dataset=own, a silo's data.npz ---------------------------------------------
@pytest.mark.parametrize("bomb", ["header_2_45", "deflated"])
def test_a_data_bomb_gets_one_line_from_every_reader(
        bomb: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: x as a bomb (a deflated one past a budget lowered to 64 MiB, so the test
    # need not write gigabytes), in a .npz and as a silo's data.npz
    monkeypatch.setattr("pfednas.data.files.MAX_DATA_BYTES", 64 << 20)
    monkeypatch.setattr("pfednas.delivery.predict.MAX_DATA_BYTES", 64 << 20)
    x = claiming((2**45, 8, 8)) if bomb == "header_2_45" else inflating(BOMB_BYTES)
    data = write_npz(tmp_path / "bomb.npz", {"x": x, "y": npy_header((1,)) + bytes(1)})
    silo = tmp_path / "silo"
    silo.mkdir()
    (silo / "data.npz").write_bytes(data.read_bytes())
    model = run / "models" / f"client_{CLIENT}"

    # Execute
    peak, err = peak_and_error(capsys, lambda: predict_main([str(model), "--data", str(data)]))
    with pytest.raises(DataError) as own:
        read_files(data)
    with pytest.raises(DataError) as in_silo:
        read_silo(silo, channels=1, size=8)

    # Assert
    assert "more than the" in err and peak < 32 << 20, (err, peak)
    for raised in (own.value, in_silo.value):
        assert "more than the" in str(raised) and len(str(raised).splitlines()) == 1


def test_labels_past_the_class_bound_are_refused(tmp_path: Path) -> None:
    # Prepare: a label of 1e8 (1e8 classes) in a .npz, and a class folder named so
    np.savez(tmp_path / "labels.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, 10**8]))
    folder = tmp_path / "images" / str(10**8)
    folder.mkdir(parents=True)
    png(folder / "a.png", 8, 8)

    # Execute / Assert
    for path in (tmp_path / "labels.npz", tmp_path / "images"):
        with pytest.raises(DataError, match=f"0..{MAX_NUM_CLASSES - 1}"):
            read_files(path)


# -- image folders --------------------------------------------------------------------------------
def png(path: Path, width: int, height: int, data: bytes | None = None) -> Path:
    """A greyscale PNG of ``width`` x ``height`` whose header is all a reader sees first;
    ``data`` None: zero pixels, else these (possibly too few) bytes compressed."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    rows = bytes((width + 1) * height) if data is None else data
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_an_image_past_the_pixel_budget_is_refused_from_its_header(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: three 12000 x 12000 PNGs (headers and a little data, 2 KB on disk), beside
    # a valid 8 x 8 image
    for label in range(3):
        (tmp_path / "images" / str(label)).mkdir(parents=True)
        png(tmp_path / "images" / str(label) / "huge.png", 12000, 12000, data=bytes(64))
    png(tmp_path / "images" / "0" / "small.png", 8, 8)
    model = run / "models" / f"client_{CLIENT}"

    # Execute
    peak, err = peak_and_error(capsys, lambda: predict_main([str(model), "--data",
                                                             str(tmp_path / "images")]))

    # Assert: refused on the first file's header, nothing decoded
    assert "12000 x 12000 pixels" in err and f"{MAX_IMAGE_PIXELS:,}" in err
    assert peak < 16 << 20, peak


def test_an_image_folder_past_the_data_budget_is_refused_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: 3 images of 8 x 8 against a budget of 100 bytes (192 needed)
    monkeypatch.setattr("pfednas.data.files.MAX_DATA_BYTES", 100)
    for label in range(3):
        (tmp_path / "images" / str(label)).mkdir(parents=True)
        png(tmp_path / "images" / str(label) / "a.png", 8, 8)

    # Execute / Assert
    with pytest.raises(DataError, match="3 images of 1 x 8 x 8 take more than the 100 bytes"):
        read_files(tmp_path / "images")


def test_image_folders_read_as_before(tmp_path: Path) -> None:
    # Prepare: two classes of grey 8 x 8 and 16 x 16 images
    rng = np.random.default_rng(0)
    pixels = {}
    for label, side in ((0, 8), (0, 8), (1, 16)):
        (tmp_path / str(label)).mkdir(exist_ok=True)
        image = rng.integers(0, 256, (side, side), dtype=np.uint8)
        path = png(tmp_path / str(label) / f"{len(pixels)}.png", side, side,
                   data=b"".join(b"\0" + row.tobytes() for row in image))
        pixels[path] = image

    # Execute
    read = read_files(tmp_path)

    # Assert: the most common side (8); the 8 x 8 ones exact, in sorted order
    assert read.images.shape == (3, 1, 8, 8) and read.labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(read.images[0, 0], pixels[tmp_path / "0" / "0.png"])
    np.testing.assert_array_equal(read.images[1, 0], pixels[tmp_path / "0" / "1.png"])


# -- specs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [("num_classes", 10**8), ("image_size", 10**5),
                                            ("in_channels", 1000), ("image_size", 1e5)])
def test_a_spec_field_past_its_bound_gets_one_line(
        key: str, value: Any, run: Path, exported: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: the kept spec, and an export's spec beside an ONNX model, with the field set
    crafted = copy_run(run, tmp_path / "run")
    spec_path = crafted / "models" / f"client_{CLIENT}" / "spec.json"
    spec = json.loads(spec_path.read_text())
    copy_run(exported, tmp_path / "export")
    beside = tmp_path / "export" / f"client_{CLIENT}.json"
    export_spec = json.loads(beside.read_text())
    spec["task"][key] = export_spec["task"][key] = value
    spec_path.write_text(json.dumps(spec))
    beside.write_text(json.dumps(export_spec))
    np.savez(tmp_path / "mine.npz", x=np.zeros((2, 8, 8), np.uint8))

    # Execute
    errors = [export_error(capsys, crafted, tmp_path / "again"),
              predict_error(capsys, str(crafted / "models" / f"client_{CLIENT}"), "--data",
                            str(tmp_path / "mine.npz")),
              predict_error(capsys, str(tmp_path / "export" / f"client_{CLIENT}.onnx"),
                            "--data", str(tmp_path / "mine.npz"))]

    # Assert: each names the field and its bound
    bound = {"num_classes": MAX_NUM_CLASSES, "image_size": MAX_IMAGE_SIZE, "in_channels": 4}
    assert all(f"task.{key} must be an integer from 1 to {bound[key]}" in e for e in errors)


@pytest.mark.parametrize("text", ["[" * 200_000 + "]" * 200_000,
                                  '{"a":' * 100_000 + "1" + "}" * 100_000,
                                  json.dumps({"pad": "x" * (2 << 20)})])
def test_a_deep_or_huge_spec_json_gets_one_line(
        text: str, run: Path, exported: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: an export's spec and the kept spec replaced by the text
    crafted = copy_run(run, tmp_path / "run")
    copy_run(exported, tmp_path / "export")
    (tmp_path / "export" / f"client_{CLIENT}.json").write_text(text)
    (crafted / "models" / f"client_{CLIENT}" / "spec.json").write_text(text)
    np.savez(tmp_path / "mine.npz", x=np.zeros((2, 8, 8), np.uint8))

    # Execute
    errors = [predict_error(capsys, str(tmp_path / "export" / f"client_{CLIENT}.onnx"),
                            "--data", str(tmp_path / "mine.npz")),
              export_error(capsys, crafted, tmp_path / "again")]

    # Assert
    expected = "a spec may have" if text.startswith('{"pad"') else "nested too deep"
    assert all(expected in e for e in errors), errors
