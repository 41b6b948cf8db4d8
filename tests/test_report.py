"""`pfednas bench` and `pfednas report`: table and plots from two tiny real runs, and the
pure table / architecture functions on constructed runs."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from pfednas.bench.cli import BenchError, BenchPreset, cells, compress_metrics, split_arguments
from pfednas.config import compose, space_for_dataset
from pfednas.methods import METHODS
from pfednas.report import plots
from pfednas.report.archs import (
    arch_matrix,
    label_arch_correlation,
    label_histograms,
    similarity_order,
)
from pfednas.report.bench_results import load_bench, read_preset
from pfednas.report.cli import build_report, write_arch_heatmap
from pfednas.report.collect import (
    ReportError,
    Run,
    file_safe,
    find_run_dirs,
    load_run,
    split_tuning_runs,
)
from pfednas.report.table import (
    aggregate,
    budget_of,
    distinct_archs,
    per_client_round,
    percentile10,
    run_row,
    run_rows,
)
from pfednas.search import get_space
from tests.conftest import PFEDNAS, REPO, pids_with_token

SMOKE_METHODS = ("fedavg", "local")
# The tests run from the working tree, committed or not (a cell keeps the changes, source.diff)
SMOKE_BENCH = (str(PFEDNAS), "bench", "bench=smoke", "--allow-dirty")


# -- two tiny real runs through `pfednas bench bench=smoke` ---------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench") / "smoke"
    # the two cells side by side, as a bench on a bigger machine runs them
    done = subprocess.run([*SMOKE_BENCH, f"bench.out={out}", "+bench.cells_at_once=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def _summary(out: Path, method: str) -> dict[str, Any]:
    return json.loads((out / method / "alpha=0.5" / "seed=0" / "summary.json").read_text())


def _table_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {row["method"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_bench_writes_one_run_per_cell_and_the_report_files(bench: tuple[Path, str]) -> None:
    out, _ = bench

    report = out / "report"

    for method in SMOKE_METHODS:
        assert _summary(out, method)["method"] == method
    for name in ("table.md", "table.csv", "runs.csv"):
        assert (report / name).stat().st_size > 0
    for name in ("acc_vs_round.png", "acc_vs_wall.png", "acc_vs_simulated_time.png",
                 "client_acc.png", "train_loss.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_loss_is_the_sample_weighted_mean_of_each_round() -> None:
    # Prepare: two rounds of records (one client without a loss) and a round with no training
    run = SimpleNamespace(rounds=[
        {"round": 1, "train": [{"train_loss": 2.0, "num_examples": 30},
                               {"train_loss": 1.0, "num_examples": 10}, {"num_examples": 5}]},
        {"round": 2, "train": []},
        {"round": 3, "train": [{"train_loss": 0.5, "num_examples": 7}]}])

    # Execute
    rounds, loss = plots.train_loss(run)  # type: ignore[arg-type]

    # Assert
    assert rounds.tolist() == [1, 3]
    assert loss.tolist() == pytest.approx([1.75, 0.5])


@pytest.mark.slow
def test_table_has_a_row_per_method_equal_to_each_summary(bench: tuple[Path, str]) -> None:
    out, _ = bench

    rows = _table_rows(out / "report" / "table.csv")
    markdown = (out / "report" / "table.md").read_text()

    # a method that fine-tunes reports the pair: as published (its name) and +ft
    assert sorted(rows) == ["fedavg", "fedavg+ft", "local"]
    assert float(rows["fedavg"]["acc_mean"]) == _summary(out, "fedavg")[
        "personalized_acc_no_ft_mean"]
    for method in SMOKE_METHODS:
        s = _summary(out, method)
        label = f"{method}+ft" if "personalized_acc_no_ft_mean" in s else method
        row = rows[label]
        params = [c["num_params"] for c in s["per_client"]]
        assert float(row["acc_mean"]) == s["personalized_acc_mean"]
        assert float(row["acc_std_clients"]) == s["personalized_acc_std"]
        assert float(row["acc_p10"]) == s["personalized_acc_p10"]
        assert float(row["wall_seconds"]) == s["wall_seconds"]
        assert (int(row["params_min"]), int(row["params_max"])) == (min(params), max(params))
        assert float(row["params_mean"]) == pytest.approx(np.mean(params))
        assert row["budget"] == "K=4 N=2 R=2 E=1"
        md_row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
        assert (f"{s['personalized_acc_mean']:.4f} ± {s['personalized_acc_std']:.4f}"
                in md_row)
    assert float(rows["local"]["bytes_up_per_client_round"]) == 0.0
    assert float(rows["fedavg"]["bytes_up_per_client_round"]) > 0


@pytest.mark.slow
def test_a_finished_cell_keeps_its_metrics_compressed_and_the_report_reads_them(
        bench: tuple[Path, str]) -> None:
    out, _ = bench
    cell = out / "fedavg" / "alpha=0.5" / "seed=0"

    rounds = [json.loads(line) for line in
              gzip.decompress((cell / "metrics.jsonl.gz").read_bytes()).decode().splitlines()]
    row = _table_rows(out / "report" / "table.csv")["fedavg"]

    assert not (cell / "metrics.jsonl").exists()
    assert [r["round"] for r in rounds] == [1, 2]
    assert float(row["bytes_up_per_client_round"]) == \
        per_client_round(_summary(out, "fedavg")["bytes_up"], rounds) > 0


@pytest.mark.slow
def test_each_cell_records_its_commit_and_load_and_the_table_shows_the_load(
        bench: tuple[Path, str]) -> None:
    out, _ = bench

    rows = _table_rows(out / "report" / "table.csv")

    for method in SMOKE_METHODS:
        record = json.loads((out / method / "alpha=0.5" / "seed=0" / "cell.json").read_text())
        assert record["returncode"] == 0 and len(record["commit"]) >= 40
        assert record["load_samples"] >= 1 and record["load_mean"] >= 0
        assert float(rows[method]["load_mean"]) == record["load_mean"]


@pytest.mark.slow
def test_rerun_skips_finished_cells_and_report_renders_the_same_table(
        bench: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = bench
    before = _summary(out, "fedavg")

    again = subprocess.run([*SMOKE_BENCH, f"bench.out={out}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300, check=False)
    report = subprocess.run([str(PFEDNAS), "report", str(out), "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)

    assert again.returncode == 0 and again.stdout.count("done before, skipped") == 2
    assert _summary(out, "fedavg") == before
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "table.csv").read_text() == (out / "report" / "table.csv").read_text()


@pytest.mark.slow
def test_a_failed_cell_is_recorded_and_the_bench_goes_on(bench: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    shutil.copytree(bench[0], out)
    bad_local = "bench.method_overrides.local=['method.arch=min','federation.lr=-1']"

    done = subprocess.run([*SMOKE_BENCH, f"bench.out={out}", bad_local],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)

    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    failed = json.loads((out / "local" / "alpha=0.5" / "seed=0" / "FAILED.json").read_text())
    assert failed["returncode"] == 2 and "federation.lr must be > 0" in failed["error"]
    assert not (out / "local" / "alpha=0.5" / "seed=0" / "summary.json").exists()
    # the stale cell's previous records do not outlive it, in either form
    assert not list((out / "local" / "alpha=0.5" / "seed=0").glob("metrics.jsonl*"))
    assert sorted(_table_rows(out / "report" / "table.csv")) == ["fedavg", "fedavg+ft"]
    assert "## Failed runs" in (out / "report" / "table.md").read_text()


@pytest.mark.slow
def test_sigterm_to_the_bench_stops_its_running_cell_and_keeps_no_result(tmp_path: Path) -> None:
    # Prepare: a bench whose first cell has started its Flower run
    out = tmp_path / "smoke"
    cell = out / "fedavg" / "alpha=0.5" / "seed=0"
    bench = subprocess.Popen([*SMOKE_BENCH, f"bench.out={out}"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (cell / "logs" / "run_token").is_file() and bench.poll() is None:
        assert time.monotonic() < deadline, "the first cell never started its run"
        time.sleep(0.5)
    token = (cell / "logs" / "run_token").read_text().strip()

    # Execute
    bench.send_signal(signal.SIGTERM)
    _, stderr = bench.communicate(timeout=120)

    # Assert: exit 130, the cell's processes gone, nothing recorded as a result or a failure
    assert bench.returncode == 130, stderr[-3000:]
    assert "the same command resumes" in stderr
    deadline = time.monotonic() + 30
    while pids_with_token(token) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pids_with_token(token) == []
    assert not (cell / "summary.json").exists() and not (cell / "FAILED.json").exists()
    assert not (out / "local").exists()


def test_report_of_a_missing_folder_fails_clearly() -> None:
    # Python lists every module the command imports (PYTHONPROFILEIMPORTTIME)
    done = subprocess.run([str(PFEDNAS), "report", "/nonexistent/pfednas-runs"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})

    assert done.returncode == 2
    lines = done.stderr.splitlines()
    said = [line for line in lines if not line.startswith("import time:")]
    assert said == ["pfednas report: error: /nonexistent/pfednas-runs: no such file or "
                    "directory"]
    # and said it without loading PyTorch (seconds, for a typo)
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line != said[0]}
    assert "pfednas.report.cli" in imported and "torch" not in imported


def test_find_run_dirs_of_a_folder_without_runs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no finished runs"):
        find_run_dirs([tmp_path])


# -- pure functions on constructed runs ---------------------------------------------------------
def _config(num_clients: int = 6, seed: int = 0) -> dict[str, Any]:
    cfg = compose([f"federation.num_clients={num_clients}", f"seed={seed}"])
    value = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(value, dict)
    return {str(k): v for k, v in value.items()}


def _space_config() -> dict[str, Any]:
    """The default search space as a digits run builds it (its per-dataset choices applied)."""
    return space_for_dataset(_config()["search_space"], "digits")


def _run(method: str, seed: int, accs: list[float], *, params: list[int] | None = None,
         archs: list[str] | None = None, path: Path = Path("/runs/x")) -> Run:
    a = np.array(accs)
    params = params or [100] * len(accs)
    per_client = [{"client_id": i, "accuracy": acc, "num_params": p}
                  for i, (acc, p) in enumerate(zip(accs, params, strict=True))]
    evaluation = [{**row, "loss": 1.0, "num_examples": 10,
                   **({"arch": archs[i]} if archs else {})} for i, row in enumerate(per_client)]
    summary = {"method": method, "dataset": "digits", "personalized_acc_mean": float(a.mean()),
               "personalized_acc_std": float(a.std()),
               "personalized_acc_p10": float(np.percentile(a, 10)), "per_client": per_client,
               "curve": [{"round": 1, "acc_mean": 0.1}, {"round": 2, "acc_mean": float(a.mean())}],
               "wall_seconds": 10.0 + seed, "bytes_up": 4000, "bytes_down": 8000, "seed": seed}
    rounds = [{"round": r, "sampled_clients": [0, 1], "train": [], "wall_seconds": 1.0,
               "server_seconds": 0.0, "bytes_up": 2000, "bytes_down": 4000,
               "evaluation": evaluation} for r in (1, 2)]
    return Run(path=path, summary=summary, rounds=rounds, config=_config(len(accs), seed))


def test_tuning_runs_never_share_a_table_with_reported_runs(tmp_path: Path) -> None:
    def run(name: str, split: str | None) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        summary = {"method": "fedavg"} | ({"eval_split": split} if split else {})
        (folder / "summary.json").write_text(json.dumps(summary))
        return folder

    reported = [run("fedavg/seed=0", "test"), run("fedavg/seed=1", None)]
    tuning = [run("tuning/fedavg/config=0", "val")]
    dirs = find_run_dirs([tmp_path])

    assert split_tuning_runs(dirs) == (sorted(p.resolve() for p in reported),
                                       [tuning[0].resolve()])
    assert split_tuning_runs([tuning[0].resolve()]) == ([tuning[0].resolve()], [])


def test_aggregate_pools_seeds_means_stds_and_params() -> None:
    rows = [run_row(_run("fedavg", 0, [0.5, 0.7], params=[10, 30])),
            run_row(_run("fedavg", 1, [0.7, 0.9], params=[20, 40])),
            run_row(_run("local", 0, [0.2, 0.4]))]

    groups = aggregate(rows, ["local", "fedavg"])

    assert [g.method for g in groups] == ["local", "fedavg"]
    fedavg = groups[1]
    assert fedavg.seeds == (0, 1)
    assert fedavg.acc_mean == pytest.approx(0.7)
    assert fedavg.acc_std_clients == pytest.approx(0.1)
    assert fedavg.acc_std_seeds == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert fedavg.wall_seconds == pytest.approx(10.5)
    assert (fedavg.params_mean, fedavg.params_min, fedavg.params_max) == (25.0, 10, 40)
    assert groups[0].acc_std_seeds is None


def test_training_memory_is_pooled_over_every_seeds_clients_or_absent() -> None:
    # Prepare: two seeds whose clients record their models' training memory, one that does not
    def with_memory(run: Run, memory: list[int]) -> Run:
        for row, m in zip(run.summary["per_client"], memory, strict=True):
            row["memory_bytes"] = m
        return run
    recorded = [run_row(with_memory(_run("fedavg", s, [0.5, 0.7]), m))
                for s, m in ((0, [2 ** 20, 3 * 2 ** 20]), (1, [2 * 2 ** 20, 2 * 2 ** 20]))]

    # Execute
    (both,) = aggregate(recorded)
    (partly,) = aggregate([*recorded, run_row(_run("fedavg", 2, [0.5, 0.7]))])

    # Assert
    assert (both.memory_mean, both.memory_min, both.memory_max) == (2 * 2 ** 20, 2 ** 20,
                                                                     3 * 2 ** 20)
    assert (partly.memory_mean, partly.memory_min, partly.memory_max) == (None, None, None)


def test_a_simulated_baseline_records_its_models_cost_against_each_budget() -> None:
    from pfednas.run.inprocess import run_inprocess

    run = run_inprocess(["method=fedavg", "federation.num_clients=4",
                         "federation.clients_per_round=2", "federation.num_rounds=1",
                         "method.finetune_epochs=1"])

    rows = run.summary["per_client"]
    assert len({(r["arch"], r["memory_bytes"]) for r in rows}) == 1  # one model, fits_all
    assert all(r["cost"] == r["memory_bytes"] <= r["budget"] and r["within_budget"]
               for r in rows)
    assert run.summary["within_budget_share"] == 1.0


def test_a_baselines_variant_is_a_baseline_and_can_be_the_best_one() -> None:
    # Prepare: FedAvg+FT, its head-only fine-tuning variant (a bench label), FedBABU, a NAS run
    def labelled(run: Run, label: str) -> Run:
        run.config["label"] = label
        return run
    rows = [run_row(_run("fedavg", 0, [0.6, 0.8])),
            run_row(labelled(_run("fedavg", 0, [0.85, 0.95]), "fedavg_fth")),
            run_row(_run("fedbabu", 0, [0.8, 0.8])),
            run_row(labelled(_run("perfedrlnas", 0, [0.8, 0.9]), "perfedrlnas_fth"))]

    # Execute
    groups = {g.method: g for g in aggregate(rows)}

    # Assert: the variant is measured against nothing and is the best baseline; FedAvg+FT's
    # ratio stays against the papers' FedAvg+FT
    variant, nas = groups["fedavg_fth"], groups["perfedrlnas_fth"]
    assert variant.err_ratio_best_baseline is None and variant.err_ratio_fedavg_ft is None
    assert nas.err_ratio_best_baseline == pytest.approx(0.15 / 0.10)
    assert nas.err_ratio_fedavg_ft == pytest.approx(0.15 / 0.30)


def test_worst_ten_percent_is_the_summary_p10_or_its_percentile() -> None:
    run = _run("local", 0, [0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 1.0])
    del run.summary["personalized_acc_p10"]

    assert run_row(run).acc_p10 == pytest.approx(0.1 + 0.9 * 0.4)
    assert percentile10([0.0, 1.0]) == pytest.approx(0.1)


def test_traffic_is_divided_by_client_round_participations() -> None:
    rounds = [{"sampled_clients": [0, 1, 2], "train": []}, {"sampled_clients": [], "train": [{}]}]

    assert per_client_round(8000, rounds) == 2000
    assert np.isnan(per_client_round(8000, []))


def test_distinct_archs_counts_final_evaluation_architectures() -> None:
    space = get_space(**_space_config())
    small, large = space.min_arch().to_str(), space.max_arch().to_str()
    run = _run("perfedrlnas", 0, [0.5, 0.6, 0.7], archs=[small, large, small])

    assert run_row(run).distinct_archs == 2
    assert distinct_archs([{"client_id": 0, "accuracy": 1.0}]) is None
    matrix = arch_matrix(run.evaluation(), _space_config())
    assert matrix is not None and matrix.indices.shape == (3, len(space.dimensions))
    assert matrix.indices[0].tolist() == list(space.min_arch().indices)
    # the largest choice of every dimension is 1.0 (a one-choice dimension, digits'
    # resolution, stays 0.0)
    assert matrix.normalised()[1].tolist() == [float(len(d.choices) > 1)
                                               for d in space.dimensions]


def test_width_slices_get_no_heatmap_and_no_notice_while_a_bad_subnet_gets_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a FedRolex client's model as its cells record it (a width slice: widths the
    # space has no choice for), once in a FedRolex run and once in a PerFedRLNAS run
    sliced = "mobilenetv3:r1-w2d2_k5e4_k5e4-w3d2_k5e4_k5e4-w4d2_k5e4_k5e4-w6d2_k5e4_k5e4"
    runs = [_run(method, 0, [0.5, 0.6], archs=[sliced, sliced], path=tmp_path / method)
            for method in ("fedrolex", "perfedrlnas")]

    # Execute
    drawn = [write_arch_heatmap(run, tmp_path / "archs", set()) for run in runs]

    # Assert: neither is drawn; only the run whose models should be subnets says why
    assert drawn == [None, None]
    notices = capsys.readouterr().err.splitlines()
    assert len(notices) == 1 and "perfedrlnas: no architecture heatmap" in notices[0]


def test_similarity_order_puts_clients_with_alike_labels_together() -> None:
    a, b = [30, 1, 1, 1], [1, 1, 1, 30]
    histograms = np.array([a, b, a, b, a, b], dtype=float) + np.arange(6)[:, None] * 0.1

    order = similarity_order(histograms)

    assert sorted(order) == list(range(6))
    groups = ["a" if i % 2 == 0 else "b" for i in order]
    assert groups in (["a"] * 3 + ["b"] * 3, ["b"] * 3 + ["a"] * 3)


def test_label_arch_correlation_is_positive_when_archs_follow_the_labels() -> None:
    space = get_space(**_space_config())
    small, large = space.min_arch().to_str(), space.max_arch().to_str()
    histograms = np.array([[30, 1, 2], [29, 2, 1], [1, 2, 30], [2, 1, 29]], dtype=float)
    rows = [{"client_id": i, "arch": s} for i, s in enumerate([small, small, large, large])]
    matrix = arch_matrix(rows, _space_config())
    assert matrix is not None

    assert label_arch_correlation(histograms, matrix) > 0.5


def test_label_histograms_count_every_client_sample_of_the_run() -> None:
    histograms = label_histograms(_config(num_clients=6))

    assert histograms.shape == (6, 10)
    assert histograms.sum() == 1797  # digits: every sample to one client, no cap


def test_report_of_constructed_nas_runs_draws_the_arch_heatmap(tmp_path: Path) -> None:
    space = get_space(**_space_config())
    archs = [space.min_arch().to_str(), space.max_arch().to_str()] * 3
    dirs = []
    for seed in (0, 1):
        run = _run("perfedrlnas", seed, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9], archs=archs)
        folder = tmp_path / "runs" / f"seed={seed}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(run.summary))
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run.rounds))
        (folder / "resolved_config.yaml").write_text(OmegaConf.to_yaml(run.config))
        dirs.append(folder)

    table = build_report(find_run_dirs([tmp_path / "runs"]), tmp_path / "report")

    assert "| perfedrlnas | 0.5 | mobilenetv3 | 0,1 |" in table.read_text()
    heatmaps = sorted(p.name for p in (tmp_path / "report" / "archs").iterdir())
    assert heatmaps == ["perfedrlnas_digits_alpha=0.5_seed=0.png",
                        "perfedrlnas_digits_alpha=0.5_seed=1.png"]


def test_report_draws_one_partition_figure_per_data_the_runs_share(tmp_path: Path) -> None:
    # Prepare: two methods on seed 0's data with a feature skew, one on seed 1's
    from pfednas.report.cli import write_partition_plots

    runs = []
    for method, seed in (("fedavg", 0), ("local", 0), ("fedavg", 1)):
        run = _run(method, seed, [0.5] * 6)
        run.config["dataset"]["feature_skew"]["rotation_groups"] = 2
        runs.append(run)

    # Execute
    written = write_partition_plots(runs, tmp_path / "partition")

    # Assert
    assert [p.name for p in written] == ["digits_dirichlet_K=6_seed=0.png",
                                         "digits_dirichlet_K=6_seed=1.png"]
    assert all(p.stat().st_size > 10_000 for p in written)


def _write_run(run: Run, folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(run.summary))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run.rounds))
    (folder / "resolved_config.yaml").write_text(OmegaConf.to_yaml(run.config))
    return folder


def test_a_run_with_compressed_metrics_reads_and_reports_as_with_plain_ones(
        tmp_path: Path) -> None:
    # Prepare: the same run twice, one folder's metrics compressed as the bench keeps them
    space = get_space(**_space_config())
    run = _run("perfedrlnas", 0, [0.4, 0.6, 0.8], archs=[space.min_arch().to_str()] * 3)
    plain = _write_run(run, tmp_path / "plain" / "run")
    packed = _write_run(run, tmp_path / "packed" / "run")

    # Execute
    archive = compress_metrics(packed)
    build_report([plain], tmp_path / "plain_report")
    build_report([packed], tmp_path / "packed_report")

    # Assert: one file replaced by the other, the same records, the same report
    assert archive == packed / "metrics.jsonl.gz" and not (packed / "metrics.jsonl").exists()
    assert load_run(packed).rounds == load_run(plain).rounds == run.rounds
    for name in ("table.csv", "table.md"):
        assert (tmp_path / "packed_report" / name).read_text() == \
            (tmp_path / "plain_report" / name).read_text()
    assert compress_metrics(packed) is None  # nothing left to compress


def test_compressed_metrics_are_the_same_bytes_for_the_same_records(tmp_path: Path) -> None:
    run = _run("fedavg", 0, [0.5, 0.7])
    first = compress_metrics(_write_run(run, tmp_path / "a"))
    time.sleep(1.1)  # a gzip header with a time or a name would differ now
    second = compress_metrics(_write_run(run, tmp_path / "b"))

    assert first is not None and second is not None
    assert first.read_bytes() == second.read_bytes()


# -- the bench's cells ----------------------------------------------------------------------------
def _preset(**changes: Any) -> BenchPreset:
    cfg = {"name": "t", "dataset": "digits", "search_space": "mobilenetv3", "methods": "all",
           "alphas": [0.1, 0.3], "seeds": [0], "overrides": ["federation.num_clients=4"],
           "method_overrides": {"fedavg": ["method.arch=min"]}, "out": "/tmp/b"}
    return BenchPreset.from_config({**cfg, **changes}, METHODS)


def test_cells_give_every_method_the_same_data_and_darts_methods_their_space() -> None:
    preset = _preset()

    todo = cells(preset, ["federation.lr=0.05"], {m: METHODS[m].spaces for m in METHODS})

    assert len(todo) == 2 * len(METHODS)
    data_keys = ("dataset=", "dataset.alpha=", "seed=", "federation.")
    for alpha in (0.1, 0.3):
        same = {tuple(o for o in c.overrides if o.startswith(data_keys))
                for c in todo if c.alpha == alpha}
        assert len(same) == 1
    spaces = {c.method: c.space for c in todo}
    assert spaces["spider"] == spaces["fednas"] == "darts_s2"
    assert spaces["fedavg"] == "mobilenetv3"
    fedavg = next(c for c in todo if c.method == "fedavg")
    assert fedavg.path == Path("/tmp/b/fedavg/alpha=0.1/seed=0")
    assert fedavg.overrides[-2:] == ("method.arch=min", "federation.lr=0.05")


def test_bench_arguments_are_checked() -> None:
    assert split_arguments(["bench=fashion_mnist", "bench.seeds=[0,1]", "federation.lr=0.1"]) \
        == ("fashion_mnist", ["bench.seeds=[0,1]"], ["federation.lr=0.1"])
    with pytest.raises(BenchError, match="bench sets seed"):
        split_arguments(["seed=1"])
    with pytest.raises(BenchError, match="unknown method"):
        _preset(methods=["fedavg", "nope"])


def test_plots_label_a_finetuned_nas_run_as_its_ft_row() -> None:
    from pfednas.report.cli import figure_label

    def run(summary: dict[str, Any]) -> Run:
        return Run(path=Path("."), summary=summary, rounds=[], config={})

    finetuned = run({"method": "perfedrlnas", "personalized_acc_no_ft_mean": 0.5})

    assert figure_label("perfedrlnas", [finetuned]) == "perfedrlnas+ft"
    assert figure_label("fedavg", [run({"method": "fedavg"})]) == "fedavg"


# -- the results page from the smoke bench's cells ------------------------------------------------
@pytest.mark.slow
def test_a_page_renders_the_bench_report_and_a_hand_edited_number_fails_the_check(
        bench: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a page with the smoke preset's table, rendered from its cells
    from pfednas.bench.pages import main as report_main
    from pfednas.report.cli import method_order
    from pfednas.report.table import to_csv

    out, _ = bench
    doc = tmp_path / "page.md"
    doc.write_text("# Page\n\nprose 0.1234 stays\n\n<!-- table:smoke -->\n| stale |\n"
                   "<!-- /table -->\n\nmore prose\n")
    args = ["--doc", str(doc), "--bench-root", str(out.parent)]
    assert report_main(args) == 0
    rendered = doc.read_text()
    order = method_order()
    results = load_bench(read_preset(REPO / "conf" / "bench" / "smoke.yaml", order),
                              out, order)
    fedavg = next(g for g in results.groups if g.method == "fedavg+ft")
    number = f"{fedavg.acc_mean:.4f}"
    edited = rendered.replace(number, "0.9999", 1)
    doc.write_text(edited)

    # Execute
    checked = report_main([*args, "--check"])
    after_check = doc.read_text()
    refreshed = report_main(args)

    # Assert: only the block is rendered, with the aggregation of the bench's own report; the
    # check fails on a hand-edited number and writes nothing; the command puts it back
    assert rendered.startswith("# Page\n\nprose 0.1234 stays\n\n<!-- table:smoke -->\n")
    assert "| stale |" not in rendered and rendered.endswith("<!-- /table -->\n\nmore prose\n")
    assert (f"| FedAvg+FT | 0.5 | {number} ± — |" in rendered
            or f"| FedAvg+FT | 0.5 | **{number} ± —** |" in rendered)
    assert to_csv(results.groups) == (out / "report" / "table.csv").read_text()
    assert number in rendered and edited != rendered
    assert checked == 1 and after_check == edited
    assert "differ from what the cells render" in capsys.readouterr().err
    assert refreshed == 0 and doc.read_text() == rendered


@pytest.mark.slow
def test_a_cell_run_beside_others_says_so_in_its_group(bench: tuple[Path, str],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    shutil.copytree(bench[0], out)
    record = out / "fedavg" / "alpha=0.5" / "seed=0" / "cell.json"
    assert json.loads(record.read_text())["cells_at_once"] == 2  # the fixture's bench
    record.write_text(json.dumps({**json.loads(record.read_text()), "cells_at_once": 3}))

    groups = aggregate(row for d in find_run_dirs([out]) for row in run_rows(load_run(d)))

    assert {g.method: g.at_once for g in groups} == {"fedavg": 3, "fedavg+ft": 3, "local": 2}


def test_runs_dealt_otherwise_are_never_one_row() -> None:
    # Prepare: FedAvg on seeds 0 and 1 as Dirichlet runs, and on the same seeds as IID runs,
    # as Dirichlet runs with rotated inputs, and as pathological runs with rotated inputs
    def dealt(seed: int, **dataset: Any) -> Run:
        run = _run("fedavg", seed, [0.5, 0.7])
        config = {**run.config, "dataset": {**run.config["dataset"], **dataset}}
        return dataclasses.replace(run, config=config)

    rotated = {"feature_skew": {**_config()["dataset"]["feature_skew"], "rotation_groups": 4}}
    settings = [{}, {"partitioner": "iid"}, rotated,
                {"partitioner": "pathological", "classes_per_client": 2, **rotated}]

    # Execute
    groups = aggregate([run_row(dealt(s, **d)) for d in settings for s in (0, 1)], ["fedavg"])

    # Assert: one row per way of dealing, each of both seeds; a Dirichlet run without feature
    # skew keeps the dataset's name alone (every committed cell's row is unchanged)
    assert sorted(g.dataset for g in groups) == [
        "digits", "digits, iid", "digits, pathological classes_per_client=2, rotation_groups=4",
        "digits, rotation_groups=4"]
    assert all(g.seeds == (0, 1) for g in groups)
    assert file_safe("fedavg_digits, rotation_groups=4_alpha=0.5") == \
        "fedavg_digits_rotation_groups=4_alpha=0.5"


def test_runs_that_ran_otherwise_are_never_one_row_nor_one_tensorboard_folder(
        tmp_path: Path) -> None:
    # Prepare: FedAvg on seed 0 simulated (and on seed 1), deployed, by `flwr run .`, on
    # another federation size and with another learning rate (issue 63 item 3)
    def fedavg(name: str, seed: int = 0, ran_as: str | None = "simulated", clients: int = 2,
               lr: float | None = None) -> Path:
        run = _run("fedavg", seed, [0.5, 0.7][:1] * clients)
        summary = {**run.summary, **({"ran_as": ran_as} if ran_as else {})}
        config = run.config
        if lr is not None:
            config = {**config, "federation": {**config["federation"], "lr": lr}}
        return _write_run(dataclasses.replace(run, summary=summary, config=config),
                          tmp_path / "runs" / name)

    folders = [fedavg("sim"), fedavg("sim_seed1", seed=1), fedavg("old", ran_as=None),
               fedavg("deployed", ran_as="deployed"), fedavg("flwr", ran_as="flwr run"),
               fedavg("k4", clients=4), fedavg("lr", lr=0.5)]
    lr = _config()["federation"]["lr"]
    k2, k4 = budget_of(_config(2)), budget_of(_config(4))  # "K=2 N=5 R=60 E=3", ...

    # Execute
    table = build_report(find_run_dirs([tmp_path / "runs"]), tmp_path / "report",
                         tensorboard=True)

    # Assert: a row per setting, only seeds (and a run from before `ran_as`, simulated) pooled
    rows = list(csv.DictReader((tmp_path / "report" / "table.csv").open()))
    assert sorted((r["budget"], r["ran_as"], r["variant"], r["seeds"]) for r in rows) == [
        (k2, "deployed", "", "0"), (k2, "flwr run", "", "0"),
        (k2, "simulated", f"federation.lr={lr}", "0 0 1"),
        (k2, "simulated", "federation.lr=0.5", "0"), (k4, "simulated", "", "0")]
    text = table.read_text()
    assert f"### digits ({k2}, deployed)" in text and f"### digits ({k4}, simulated)" in text
    assert f"| fedavg (federation.lr={lr}) | 0.5 |" in text
    runs = list(csv.DictReader((tmp_path / "report" / "runs.csv").open()))
    assert sorted((r["ran_as"], Path(r["path"]).name) for r in runs) == sorted(
        [("simulated", "sim"), ("simulated", "sim_seed1"), ("simulated", "old"),
         ("deployed", "deployed"), ("flwr run", "flwr"), ("simulated", "k4"),
         ("simulated", "lr")])
    events = sorted(p.parent.relative_to(tmp_path / "report" / "tensorboard").as_posix()
                    for p in (tmp_path / "report" / "tensorboard").rglob("events.out.*"))
    assert len(events) == len(set(events)) == len(folders)  # a folder per run
    assert file_safe(f"digits_{k2}_deployed") + "/fedavg/alpha=0.5_seed=0" in events
