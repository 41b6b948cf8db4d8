"""A model file does not run code it was not vouched for; kept models are their owner's.

``pfednas predict`` on a TorchScript file runs the file's code (issue 61, finding 2): a
crafted ``client_1.pt`` writes a file of its choice through ``torch.from_file(path,
shared=True)``. These tests show it doing so where the user says it trusts the file,
and predict refusing it otherwise (one line, exit 2, nothing written), while what export
wrote still runs: the ``.pt`` by the hash export recorded in the run's kept spec, the
``.onnx`` in ONNX Runtime (its external data only from inside its folder) and the kept
folder itself rebuilt in PyTorch. Finding 8: kept models and exports are mode 0600 in
0700 folders, whatever the umask.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from pfednas.delivery.export import export_client
from pfednas.delivery.predict import main as predict_main
from pfednas.edge.kept import sha256
from pfednas.edge.runtime import external_data_problem
from pfednas.run.inprocess import run_inprocess

RUN = ["method=fedavg", "method.arch=min", "method.finetune_epochs=1",
       "federation.num_clients=2", "federation.clients_per_round=2",
       "federation.local_epochs=1", "dataset.max_samples_per_client=100",
       "federation.num_rounds=1", "federation.eval_every=1"]
CLIENT = 1


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny digits run (1 x 8 x 8 inputs, 10 classes) under the most permissive umask,
    with client 1's reported model exported in both formats."""
    out = tmp_path_factory.mktemp("trust") / "run"
    old = os.umask(0)
    try:
        run_inprocess(RUN, out)
        for fmt in ("torchscript", "onnx"):
            export_client(out, CLIENT, out / "export", fmt=fmt, measure_latency=False)
    finally:
        os.umask(old)
    return out


def reported_accuracy(run: Path) -> float:
    rows = json.loads((run / "summary.json").read_text())["per_client"]
    return float(next(r["accuracy"] for r in rows if r["client_id"] == CLIENT))


def digits_npz(path: Path) -> Path:
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    np.savez(path, x=x, y=np.arange(4))
    return path


class FileWriter(torch.nn.Module):
    """What a crafted TorchScript model can do: write ``target`` when it runs."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        payload = torch.tensor([105, 109, 112, 111, 114, 116, 10], dtype=torch.uint8)
        written = torch.from_file(self.target, shared=True, size=7, dtype=torch.uint8)
        written.copy_(payload)
        return torch.zeros(x.shape[0], 10) + written[:1].float() * 0


def crafted_model(run: Path, folder: Path, target: Path) -> Path:
    """``folder/client_1.pt``: a crafted TorchScript file, with the export's real spec
    beside it (claiming, too, the crafted file's hash)."""
    folder.mkdir()
    model = folder / f"client_{CLIENT}.pt"
    with pytest.warns(FutureWarning):  # torch.jit.script is deprecated, not gone
        torch.jit.script(FileWriter(str(target))).save(str(model))
    spec = json.loads((run / "export" / f"client_{CLIENT}.json").read_text())
    spec["export"]["formats"]["torchscript"]["sha256"] = sha256(model)
    (folder / f"client_{CLIENT}.json").write_text(json.dumps(spec))
    return model


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = predict_main(list(args))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "accuracy" not in captured.out
    return err


def test_a_crafted_torchscript_file_runs_its_code_only_when_the_user_trusts_it(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a crafted client_1.pt that writes a .pth (code at the next interpreter start)
    target = tmp_path / "site-packages" / "payload.pth"
    target.parent.mkdir()
    model = crafted_model(run, tmp_path / "incoming", target)
    data = digits_npz(tmp_path / "mine.npz")
    out = tmp_path / "predictions.csv"

    # Execute: without trust (alone, with the run that made the real export, with --kept),
    # then with --trust-torchscript
    errors = [refused(capsys, str(model), "--data", str(data), "--out", str(out)),
              refused(capsys, str(model), "--run", str(run), "--client", str(CLIENT)),
              refused(capsys, str(model), "--data", str(data), "--kept", str(run))]
    written_before_trust = target.exists() or out.exists()
    trusted = predict_main([str(model), "--data", str(data), "--trust-torchscript"])

    # Assert: refused, each in one line naming why and the way out; nothing written; the
    # attack itself is real (trusting the file runs its code)
    assert not written_before_trust
    assert all("TorchScript, which runs the file's code" in e for e in errors)
    assert all("--trust-torchscript" in e for e in errors)
    assert "sha256 is not one pfednas export recorded" in errors[1]
    assert trusted == 0 and target.read_bytes() == b"import\n"


def test_what_export_wrote_runs_and_a_changed_byte_is_refused(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: the exported .pt, and a copy with one byte appended
    exported = run / "export" / f"client_{CLIENT}.pt"
    moved = tmp_path / "device"
    shutil.copytree(run / "export", moved)
    changed = moved / f"client_{CLIENT}.pt"
    changed.write_bytes(exported.read_bytes() + b"\0")
    data = digits_npz(tmp_path / "mine.npz")

    # Execute: the .pt by its recorded hash (--run; --kept on a copy), the .onnx, the kept
    # folder; then the changed copy
    accuracies = []
    for model in (exported, run / "export" / f"client_{CLIENT}.onnx",
                  run / "models" / f"client_{CLIENT}"):
        assert predict_main([str(model), "--run", str(run), "--client", str(CLIENT)]) == 0
        accuracies.append(float(capsys.readouterr().out.strip().splitlines()[-1].split()[1]))
    kept_by_copy = predict_main([str(exported), "--data", str(data), "--kept", str(run)])
    capsys.readouterr()
    err = refused(capsys, str(changed), "--data", str(data), "--kept", str(run))

    # Assert: every way the export can run gives the reported figure; the changed file is
    # not loaded
    assert accuracies == [reported_accuracy(run)] * 3
    assert kept_by_copy == 0
    assert "sha256 is not one pfednas export recorded" in err


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_an_onnx_file_reading_data_outside_its_folder_is_refused(
        where: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # Prepare: a model whose weight is "external data" in a file outside its folder
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(640, np.float32).tobytes())
    folder = tmp_path / "incoming"
    folder.mkdir()
    location = {"parent": "../secret.bin", "absolute": str(secret), "link": "w.bin"}[where]
    if where == "link":
        (folder / "w.bin").symlink_to(secret)
    weight = numpy_helper.from_array(np.zeros((64, 10), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("length", str(640 * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])], "crafted",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [weight])
    model = folder / f"client_{CLIENT}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(model))
    shutil.copy(run / "export" / f"client_{CLIENT}.json", folder)

    # Execute
    problem = external_data_problem(model)
    err = refused(capsys, str(model), "--data", str(digits_npz(tmp_path / "mine.npz")))

    # Assert: pfednas' own check names it, before ONNX Runtime sees the file
    assert problem is not None and "outside the model's folder" in problem
    assert "outside the model's folder" in err
    assert external_data_problem(run / "export" / f"client_{CLIENT}.onnx") is None


def test_kept_models_and_exports_are_their_owners_alone(run: Path) -> None:
    # Prepare: every kept and exported path of the run (written under umask 0)
    kept = [run / "models", *sorted((run / "models").rglob("*"))]
    exported = [run / "export", *sorted((run / "export").iterdir())]

    # Execute
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [*kept, *exported]}

    # Assert: folders 0700, files 0600; the export's hash is in the run's kept spec
    assert modes == {name: 0o700 if (run / name).is_dir() else 0o600 for name in modes}
    assert len(modes) == 2 + 2 * 4 + 3
    recorded = json.loads((run / "models" / f"client_{CLIENT}" / "spec.json").read_text())
    assert {entry["file"] for entry in recorded["exported"].values()} == {
        f"client_{CLIENT}.pt", f"client_{CLIENT}.onnx"}
    assert sha256(run / "export" / f"client_{CLIENT}.pt") in recorded["exported"]
