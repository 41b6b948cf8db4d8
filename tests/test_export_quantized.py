"""The model quantized for its device (issue 65 item 3).

A tiny PerFedRLNAS run's client 1 is exported as ONNX with ``--quantize int8``: the int8
file (ONNX Runtime static quantization, calibrated on the client's training split) lies
beside the float32 one and is smaller; the spec records both files' size, latency, peak
memory and accuracy on the client's test split; ``pfednas predict`` runs the int8 file
without PyTorch and prints the accuracy the spec records. ``--quantize`` with another
format or another value gets one line, exit code 2, and writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pfednas.delivery.export import main as export_main
from pfednas.run.inprocess import run_inprocess

RUN = ["method=perfedrlnas", "federation.num_clients=3", "federation.clients_per_round=2",
       "federation.local_epochs=1", "dataset.max_samples_per_client=150",
       "federation.num_rounds=2", "federation.eval_every=2", "method.finetune_epochs=1"]
CLIENT = 1
PREDICT = ("import sys\n"
           "from pfednas.delivery.predict import main\n"
           "code = main(sys.argv[1:])\n"
           "print('torch imported:', 'torch' in sys.modules)\n"
           "sys.exit(code)\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantized") / "run"
    run_inprocess(RUN, out)
    return out


@pytest.mark.slow
def test_the_int8_model_is_smaller_and_predict_scores_it_as_its_spec_says(
        run: Path, tmp_path: Path) -> None:
    # Prepare: the float32 and the int8 file of client 1, measured
    code = export_main([str(run), "--client", str(CLIENT), "--format", "onnx",
                        "--quantize", "int8", "--out", str(tmp_path)])
    assert code == 0
    spec = json.loads((tmp_path / f"client_{CLIENT}.json").read_text())
    float32, int8 = spec["export"]["formats"]["onnx"], spec["export"]["formats"]["onnx-int8"]
    int8_file = tmp_path / f"client_{CLIENT}.int8.onnx"

    # Execute: predict the int8 file on the client's test split, in a fresh interpreter
    done = subprocess.run([sys.executable, "-c", PREDICT, str(int8_file), "--run", str(run),
                           "--client", str(CLIENT)],
                          capture_output=True, text=True, check=False)

    # Assert: a smaller file, both entries complete, the float32 one scoring the reported
    # figure and predict reproducing the int8 one without PyTorch
    assert done.returncode == 0, done.stderr[-2000:]
    *_, accuracy, imported = done.stdout.strip().splitlines()
    assert imported == "torch imported: False"
    assert int8_file.is_file() and int8["file"] == int8_file.name
    assert int8["bytes"] == int8_file.stat().st_size < float32["bytes"]
    assert float32["bytes"] == (tmp_path / f"client_{CLIENT}.onnx").stat().st_size
    for entry in (float32, int8):
        assert entry["accuracy"]["split"] == "test" and entry["accuracy"]["samples"] > 0
        assert entry["measured"]["runtime"].startswith("onnxruntime")
        assert entry["measured"]["latency_ms_median"] > 0
        assert entry["measured"]["peak_rss_mb"] > 0
    assert float32["accuracy"]["accuracy"] == spec["accuracy"]
    assert float(accuracy.split()[1]) == int8["accuracy"]["accuracy"]
    assert int8["quantization"]["calibration_split"] == "train"
    assert int8["quantization"]["calibration_samples"] > 0


@pytest.mark.parametrize("args", [["--format", "torchscript", "--quantize", "int8"],
                                  ["--quantize", "int8"],
                                  ["--format", "onnx", "--quantize", "int4"]])
def test_quantize_on_what_cannot_be_quantized_gets_one_line_and_writes_nothing(
        run: Path, tmp_path: Path, args: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    out = tmp_path / "export"

    # Execute
    code = export_main([str(run), "--client", str(CLIENT), *args, "--out", str(out),
                        "--no-measure"])

    # Assert
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--quantize" in err[0]
    assert not out.exists()
