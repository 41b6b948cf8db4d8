"""The personalized model reaches its device, for every method.

For each of the nine methods a tiny run (the in-process runner: the real strategy and
ClientApp handlers) keeps each client's final models under ``<run>/models``; client 1's
reported model is exported as TorchScript (and as ONNX: :data:`ONNX_METHODS`), and
``pfednas predict`` on its evaluation split prints exactly the accuracy ``summary.json``
reports for that client; the as-published export gives the figure reported without
fine-tuning. Then the bad inputs: a run with nothing kept, damaged and crafted folders,
and data of the wrong shape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pfednas.delivery.export import export_client
from pfednas.delivery.export import main as export_main
from pfednas.delivery.predict import main as predict_main
from pfednas.delivery.predict import run_split
from pfednas.edge.kept import sha256
from pfednas.edge.runtime import load
from pfednas.run.inprocess import run_inprocess
from pfednas.search import get_space

# every test reads the module's nine real runs (or runs one of its own): not the quick loop
pytestmark = pytest.mark.slow

FED = ["federation.num_clients=3", "federation.clients_per_round=2",
       "federation.local_epochs=1", "dataset.max_samples_per_client=150"]
ROUNDS = ["federation.num_rounds=2", "federation.eval_every=2"]
SMALL_DARTS = ["search_space=darts_s2", "search_space.channels=4", "search_space.layers=3",
               "search_space.steps=2", "search_space.multiplier=2"]
RUNS: dict[str, list[str]] = {
    "perfedrlnas": ["method=perfedrlnas", *FED, *ROUNDS, "method.finetune_epochs=1"],
    "fedavg": ["method=fedavg", *FED, *ROUNDS, "method.arch=min", "method.finetune_epochs=1"],
    "local": ["method=local", *FED, *ROUNDS, "method.arch=min"],
    "fedrep": ["method=fedrep", *FED, *ROUNDS, "method.arch=min", "method.finetune_epochs=1"],
    "fedbabu": ["method=fedbabu", *FED, *ROUNDS, "method.arch=min", "method.finetune_epochs=1"],
    "fednas": ["method=fednas", *FED, *ROUNDS, *SMALL_DARTS, "method.finetune_epochs=1"],
    "spider": ["method=spider", *FED, *ROUNDS, *SMALL_DARTS, "federation.clients_per_round=3",
               "method.finetune_epochs=1"],
    "ditto": ["method=ditto", *FED, *ROUNDS, *SMALL_DARTS, "federation.clients_per_round=3",
              "method.finetune_epochs=1"],
    "hapfnas": ["method=hapfnas", *FED, "federation.num_rounds=3", "federation.eval_every=3",
                "method.distill_rounds=1", "method.search_rounds=1", "method.knowledge_width=4",
                "method.knowledge_epochs=1", "method.transfer.size=100",
                "method.distill.steps=2", "method.distill.batch_size=16",
                "method.predictor.archs_per_client=2", "method.predictor.trees=5",
                "method.predictor.folds=2", "method.evolution.population=4",
                "method.evolution.generations=2", "method.evolution.parents=2",
                "method.finetune_epochs=1"],
}
CLIENT = 1
# Every method's reported model is exported as TorchScript; as ONNX too for one method of
# each kind (a searched subnet, HAPFNAS's model, SPIDER's local DARTS model) and, for the
# predict tests, FedAvg's. Which model a method keeps is read by code common to both
# formats; the ONNX exporter's work depends on the search space, and
# tests/test_export_formats.py exports every space to every format. An ONNX export costs
# about 5 CPU-seconds (torch.export), a TorchScript trace a fraction of one.
ONNX_METHODS = ("perfedrlnas", "hapfnas", "spider")


def predicted_accuracy(capsys: pytest.CaptureFixture[str], model: Path, run: Path) -> float:
    code = predict_main([str(model), "--run", str(run), "--client", str(CLIENT)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1].startswith("accuracy ")
    return float(out[-1].split()[1])


def client_row(run: Path) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    return next(r for r in summary["per_client"] if r["client_id"] == CLIENT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kept")
    out = {}
    for method, overrides in RUNS.items():
        run_inprocess(overrides, root / method)
        out[method] = root / method
    return out


@pytest.fixture(scope="module")
def fedavg_onnx(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Client 1's FedAvg model as ONNX (checked on writing), for the tests that only read it."""
    out = tmp_path_factory.mktemp("fedavg_onnx")
    export_client(runs["fedavg"], CLIENT, out, fmt="onnx", measure_latency=False)
    return out / f"client_{CLIENT}.onnx"


@pytest.mark.parametrize("method", sorted(RUNS))
def test_exported_models_reproduce_the_reported_figures(
        method: str, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: the run's reported figures of client 1
    run = runs[method]
    row = client_row(run)
    out = run / "export"

    formats = ("torchscript", "onnx") if method in ONNX_METHODS else ("torchscript",)

    # Execute: the reported model in its formats; the as-published one
    for fmt in formats:
        export_client(run, CLIENT, out, fmt=fmt, measure_latency=False)
    spec = json.loads((out / f"client_{CLIENT}.json").read_text())
    ts = predicted_accuracy(capsys, out / f"client_{CLIENT}.pt", run)

    # Assert: every client kept its models; each runtime reproduces the reported accuracy,
    # with the same class for every sample
    assert sorted(p.name for p in (run / "models").iterdir()) == ["client_0", "client_1",
                                                                  "client_2"]
    assert ts == row["accuracy"]
    if "onnx" in formats:
        assert predicted_accuracy(capsys, out / f"client_{CLIENT}.onnx", run) == ts
        x, _ = run_split(spec, run, CLIENT)
        np.testing.assert_array_equal(load(out / f"client_{CLIENT}.pt").predict(x),
                                      load(out / f"client_{CLIENT}.onnx").predict(x))
    assert set(spec["export"]["formats"]) == set(formats)
    assert all(f["check"]["same_classes"] for f in spec["export"]["formats"].values())
    assert spec["accuracy"] == row["accuracy"] and spec["method"] == method
    assert spec["evaluation"]["split"] == "test"
    assert spec["cost"]["params"] == row["num_params"] > 0 and spec["cost"]["macs"] > 0
    assert spec["cost"]["train_memory_bound_bytes"] >= spec["cost"]["train_memory_bytes"] > 0
    if "arch" in row:  # the NAS methods' rows name the architecture
        assert spec["arch"] == row["arch"]
    if "budget" in row:
        assert spec["budget"]["budget"] == row["budget"]
        assert spec["budget"]["fits"] == row["within_budget"]
    if method == "local":  # nothing fine-tuned: the one model is the reported one
        assert spec["reported"] == "as-published" and set(spec["models"]) == {"as-published"}
        return
    assert spec["reported"] == "finetuned"
    export_client(run, CLIENT, run / "published", model="as-published", measure_latency=False)
    assert predicted_accuracy(capsys, run / "published" / f"client_{CLIENT}.pt",
                              run) == row["accuracy_no_ft"]


def test_the_onnx_path_needs_no_pytorch_and_the_export_is_measured(
        runs: dict[str, Path], tmp_path: Path) -> None:
    # Prepare: the export with its latency and memory measured
    run = runs["perfedrlnas"]
    code = export_main([str(run), "--client", str(CLIENT), "--format", "onnx",
                        "--out", str(tmp_path)])
    assert code == 0
    measured = json.loads((tmp_path / f"client_{CLIENT}.json").read_text())[
        "export"]["formats"]["onnx"]["measured"]

    # Execute: predict in a fresh interpreter, then say whether PyTorch was imported
    script = ("import sys\n"
              "from pfednas.delivery.predict import main\n"
              "code = main(sys.argv[1:])\n"
              "print('torch imported:', 'torch' in sys.modules)\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"client_{CLIENT}.onnx"),
                           "--run", str(run), "--client", str(CLIENT)],
                          capture_output=True, text=True, check=False)

    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    *_, accuracy, imported = done.stdout.strip().splitlines()
    assert imported == "torch imported: False"
    assert float(accuracy.split()[1]) == client_row(run)["accuracy"]
    assert measured["runtime"].startswith("onnxruntime") and measured["batch"] == 1
    assert measured["latency_ms_median"] > 0 and measured["peak_rss_mb"] > 0


def test_predict_on_a_users_npz_and_image_folder(fedavg_onnx: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    # Prepare: an ONNX export (digits: 1 x 8 x 8), and 6 images as uint8 arrays and files
    model = fedavg_onnx
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(6) % 3)
    for i, image in enumerate(x):
        (tmp_path / "images" / str(i % 3)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / str(i % 3) / f"{i}.png")

    # Execute
    from_npz = predict_main([str(model), "--data", str(tmp_path / "mine.npz")])
    lines_npz = capsys.readouterr().out.strip().splitlines()
    from_images = predict_main([str(model), "--data", str(tmp_path / "images"),
                                "--out", str(tmp_path / "pred.csv")])
    lines_images = capsys.readouterr().out.strip().splitlines()

    # Assert: one class per sample, in range, and the accuracy where labels were given
    assert from_npz == 0 and from_images == 0
    assert lines_npz[0] == "index,class,class_name" and len(lines_npz[1:7]) == 6
    assert all(0 <= int(line.split(",")[1]) < 10 for line in lines_npz[1:7])
    assert lines_npz[-1].startswith("accuracy ") and lines_images[-1].startswith("accuracy ")
    written = (tmp_path / "pred.csv").read_text().splitlines()
    assert written[0] == "index,file,class,class_name" and len(written) == 7
    assert written[1].startswith("0,0/0.png,")  # digits' classes are named "0" .. "9"


# -- bad input ---------------------------------------------------------------------------------
def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("export", "published"))
    return to


def export_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = export_main([*args, "--no-measure"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_a_run_without_kept_models_gets_one_line(runs: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(runs["fedavg"], tmp_path / "old")
    shutil.rmtree(run / "models")

    err = export_error(capsys, str(run), "--client", "0")

    assert "holds no kept models" in err


@pytest.mark.parametrize("damage", ["missing_keys", "arch_disagrees", "non_finite",
                                    "changed_bytes", "symlink_out", "no_spec"])
def test_a_damaged_or_crafted_folder_is_refused(
        damage: str, runs: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a copy of a run, one thing broken in client 1's folder
    run = copy_run(runs["perfedrlnas"], tmp_path / "run")
    folder = run / "models" / f"client_{CLIENT}"
    spec_path = folder / "spec.json"
    spec = json.loads(spec_path.read_text())
    weights = folder / "finetuned.npz"
    if damage == "missing_keys":
        del spec["task"], spec["search_space"]
    elif damage == "arch_disagrees":  # another architecture of the space
        space = get_space(**spec["search_space"])
        kept, largest = spec["models"]["finetuned"]["arch"], space.max_arch().to_str()
        spec["models"]["finetuned"]["arch"] = (largest if kept != largest
                                               else space.min_arch().to_str())
    elif damage == "non_finite":  # a NaN, with the hash made to match (a crafted folder)
        with np.load(weights) as data:
            state = {k: data[k].copy() for k in data.files}
        first = next(k for k, v in state.items() if v.dtype.kind == "f")
        state[first].flat[0] = np.nan
        with weights.open("wb") as f:
            np.savez(f, **state)
        spec["models"]["finetuned"]["sha256"] = sha256(weights)
    elif damage == "changed_bytes":
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "symlink_out":
        outside = tmp_path / "outside.npz"
        shutil.copy(weights, outside)
        weights.unlink()
        weights.symlink_to(outside)
    elif damage == "no_spec":
        spec_path.unlink()
    if spec_path.exists():
        spec_path.write_text(json.dumps(spec))

    # Execute
    err = export_error(capsys, str(run), "--client", str(CLIENT), "--out",
                       str(tmp_path / "export"))

    # Assert: one line naming the problem, and no model written
    assert {"missing_keys": "missing keys", "arch_disagrees": "architecture",
            "non_finite": "non-finite", "changed_bytes": "sha256",
            "symlink_out": "symbolic link", "no_spec": "no spec.json"}[damage] in err
    assert not (tmp_path / "export" / f"client_{CLIENT}.pt").exists()


def test_predict_names_what_it_expected(fedavg_onnx: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: an export, and inputs of the wrong size, dtype and label range
    model = str(fedavg_onnx)
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 28, 28), np.uint8))
    np.savez(tmp_path / "strings.npz", x=np.array([["a"] * 8] * 8)[None].repeat(2, 0))
    np.savez(tmp_path / "labels.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, 12]))

    # Execute / Assert: exit code 2, one line, what the model takes
    for name, expected in [("big", "the model takes (N, 1, 8, 8)"),
                           ("strings", "expected uint8"),
                           ("labels", "the model has 10 classes")]:
        code = predict_main([model, "--data", str(tmp_path / f"{name}.npz")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, (name, err)


# -- crafted run folders for --from-checkpoint and report (issue 43, finding 8) ----------------
@pytest.mark.parametrize("craft", ["profiles", "checkpoint_keys", "nan_weights"])
def test_from_checkpoint_on_a_crafted_run_gets_one_line(
        craft: str, runs: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a PerFedRLNAS run with its checkpoint, one thing crafted
    from pfednas.app.checkpoint import save_checkpoint
    from pfednas.config import compose, settings_from_cfg
    from pfednas.methods.build import build_strategy

    run = copy_run(runs["perfedrlnas"], tmp_path / "run")
    strategy = build_strategy(settings_from_cfg(compose(RUNS["perfedrlnas"])), deployment=False)
    save_checkpoint(run, 2, strategy.state(), lineage="test")
    checkpoint = run / "checkpoint.npz"
    assert export_main([str(run), "--client", "0", "--from-checkpoint", "--no-measure",
                        "--out", str(tmp_path / "good")]) == 0  # the uncrafted folder exports
    if craft == "profiles":  # a deployment's summary whose profile rows lack their fields
        summary = json.loads((run / "summary.json").read_text())
        summary["profiles"] = [{"client_id": 0, "source": "stated"}]
        (run / "summary.json").write_text(json.dumps(summary))
    else:
        with np.load(checkpoint, allow_pickle=False) as data:
            state = {k: data[k].copy() for k in data.files}
        if craft == "checkpoint_keys":
            state = {k: v for k, v in state.items() if not k.startswith("supernet_0")}
        else:
            for key, value in state.items():
                if key.startswith("supernet") and value.dtype.kind == "f":
                    value[...] = np.nan
        np.savez(checkpoint, **state)  # type: ignore[arg-type]

    # Execute / Assert: exit 2, one line, no model
    export_error(capsys, str(run), "--client", "0", "--from-checkpoint",
                 "--out", str(tmp_path / "export"))
    assert not (tmp_path / "export" / "client_0.pt").exists()


@pytest.mark.parametrize("summary", [[], {"method": "fedavg", "dataset": "digits"},
                                     {"method": "fedavg", "dataset": "digits",
                                      "per_client": [[1, 0.5]]}])
def test_report_on_a_crafted_summary_gets_one_line(
        summary: Any, runs: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pfednas.report.cli import main as report_main

    run = copy_run(runs["fedavg"], tmp_path / "run")
    (run / "summary.json").write_text(json.dumps(summary))

    code = report_main([str(run), "--out", str(tmp_path / "report")])

    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_a_model_dir_that_cannot_be_written_loses_no_evaluation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: the run folder's models/ is a file, so nothing can be written under it
    out = tmp_path / "run"
    out.mkdir()
    (out / "models").write_text("not a folder")

    # Execute
    run = run_inprocess(RUNS["fedavg"], out)

    # Assert: every client evaluated; each says, in one line, that its model was not kept
    assert run.summary["num_clients_evaluated"] == 3
    said = [line for line in capsys.readouterr().out.splitlines() if "not kept in" in line]
    assert len(said) == 3
