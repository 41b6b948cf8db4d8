"""Why the NAS methods lose on bench=fashion_mnist: diagnostic runs on the tuning seed.

Runs at commit ea544f9 (the options it varies left the methods in issue 31); on a tree
whose methods lack one of them it refuses to start, with a one-line message.

Each run is one tuning cell's configuration (seed 100, α 0.3, validation splits: never a
reported seed or a test split) with one knob changed; a run may name another unreported
seed (101) to see whether a difference holds beyond one draw. Results land in
docs/bench/fashion_mnist/diagnostics/<name>/; runs already there are skipped:

    .venv/bin/python benchmarks/bench_diagnostics.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pfednas.bench import Cell, run_cell
from pfednas.config import compose

BASE = Path("docs/bench/fashion_mnist")
# PerFedRLNAS with its search taken out: every round trains a fixed architecture (warm-up
# for all R rounds: no policy is updated) and the personalized model is that architecture
FITS_ALL = ["method.warmup_rounds=40", "method.warmup_arch=fits_all", "method.final_arch=fits_all"]
LARGEST = ["method.warmup_rounds=40", "method.final_arch=largest_in_budget"]
# Fashion-MNIST's space without its elastic input resolution (every subnet at 28 px)
NO_RESOLUTION = "+search_space.per_dataset.fashion_mnist.resolution_scales=[1.0]"
# (method, tuning configuration it starts from, the knob, the run's name[, seed])
RUNS: list[tuple] = [
    ("hapfnas", 0, ["method.search_objective=params"], "hapfnas_params_objective"),
    ("perfedrlnas", 1, ["method.final_arch=largest_in_budget"], "perfedrlnas_largest_in_budget"),
    ("perfedrlnas", 1, ["method.lambda_time=0"], "perfedrlnas_lambda_time_0"),
    ("perfedrlnas", 1, ["federation.lr=0.05"], "perfedrlnas_lr_0.05"),
    ("perfedrlnas", 1, ["method.finetune_scope=head"], "perfedrlnas_finetune_head"),
    ("perfedrlnas", 1, ["method.train_scope=body", "method.finetune_scope=head"],
     "perfedrlnas_body_train_head_finetune"),
    ("hapfnas", 0, ["method.finetune_scope=head"], "hapfnas_finetune_head"),
    # the tuned cells again at this code (the tuning cells ran on an earlier commit)
    ("perfedrlnas", 1, [], "perfedrlnas_tuned"),
    ("hapfnas", 0, [], "hapfnas_tuned"),
    # each client keeps its own classifier head (FedRep's rule on the subnets)
    ("perfedrlnas", 1, ["method.personal_head=true"], "perfedrlnas_personal_head"),
    ("perfedrlnas", 1, ["method.personal_head=true", "method.finetune_scope=head"],
     "perfedrlnas_personal_head_finetune_head"),
    ("hapfnas", 0, ["method.personal_head=true"], "hapfnas_personal_head"),
    # FedNAS's tuned cell again with the derived network's BatchNorm statistics re-estimated
    # (method.bn_recalibrate, on by default since; the tuning cell ran without it)
    ("fednas", 1, [], "fednas_tuned_bn_recalibrate"),
    # more training of shared weights before the search: the first rounds train each
    # client's largest subnet in budget (more overlap between clients), no policy update
    ("perfedrlnas", 1, ["method.warmup_rounds=10"], "perfedrlnas_warmup_10"),
    ("perfedrlnas", 1, ["method.warmup_rounds=20"], "perfedrlnas_warmup_20"),
    # the paper's merge: each covering client counts 1, whatever its sample count
    ("perfedrlnas", 1, ["method.merge_weighting=uniform"], "perfedrlnas_merge_uniform"),
    # the tuned cell again at the code of the three runs above (2026-11-24)
    ("perfedrlnas", 1, [], "perfedrlnas_tuned_2026-11-24"),
    # HAPFNAS's subnets measured by a ridge probe on their features (run by hand first, with
    # checkpoint_every=20 for benchmarks/hapfnas_predictor_ceiling.py; 2026-11-24)
    ("hapfnas", 0, ["method.predictor.measure=probe"], "hapfnas_probe"),
    # FedBABU's training rule (body only, random fixed head) with the whole slice fine-tuned
    ("perfedrlnas", 1, ["method.train_scope=body"], "perfedrlnas_body_train"),
    # FedBABU's rule in HAPFNAS's heteroFedAvg phase (the architectures fixed, as FedBABU's)
    ("hapfnas", 0, ["method.train_scope=body"], "hapfnas_body_train"),
    ("hapfnas", 0, ["method.train_scope=body", "method.finetune_scope=head"],
     "hapfnas_body_train_head_finetune"),
    # (the tuned values on seed 101 at R 40 ran first on 2026-11-24 as rounds_40_*_seed101,
    # before afdb9a9 and with FedBABU's fine-tuning bug; in the history at 2475ab7. The
    # rounds/seed=101/R=40 runs below replace them.)
    # Does more training per slice close the gap to FedBABU / FedRep? R 40 -> 80 for every
    # method alike (its tuned configuration), on the two unreported seeds (2026-11-25)
    *[(method, config, [f"federation.num_rounds={rounds}", f"federation.eval_every={rounds}"],
       f"rounds/seed={seed}/R={rounds}/{method}", seed)
      for seed, rounds in ((100, 80), (101, 40), (101, 80))
      for method, config in (("fedbabu", 1), ("perfedrlnas", 0), ("fedavg", 1),
                             ("hapfnas", 0), ("fedrep", 1))],
    # FedBABU scored 0.80-0.84 on every tuning-seed run since 2026-11-24 and 0.88-0.90 on the
    # reported seeds: the tuning seed's runs scored on its test split instead (a method that
    # never reads val trains the identical model either way, so only the scoring differs).
    # It was not the split: FedBABU fine-tuned the whole model since da6c3ef (fixed 2475ab7).
    *[(method, config, ["eval_split=test"], f"scoring/seed=100/test/{method}", 100)
      for method, config in (("fedbabu", 1), ("perfedrlnas", 0), ("fedavg", 1))],
    # FedBABU's recipe (body trained under a frozen head, head-only fine-tuning) on each
    # client's largest architecture in its budget, trained together by heteroFedAvg: the
    # size a budget allows each client, which a fixed-architecture baseline cannot use
    ("hapfnas", 0, ["method.search_objective=params", "method.train_scope=body",
                    "method.finetune_scope=head"], "babu/hapfnas_params_body_head"),
    ("hapfnas", 0, ["method.search_objective=params", "method.finetune_scope=head"],
     "babu/hapfnas_params_head"),
    ("hapfnas", 1, ["method.search_objective=params", "method.train_scope=body",
                    "method.finetune_scope=head"], "babu/hapfnas_lr005_params_body_head"),
    ("perfedrlnas", 0, ["method.final_arch=largest_in_budget", "method.train_scope=body",
                        "method.finetune_scope=head"], "babu/perfedrlnas_largest_body_head"),
    # how much the size of the fixed model matters to the strongest baselines: the space's
    # smallest architecture instead of the largest that fits every budget
    ("fedbabu", 1, ["method.arch=min"], "size/fedbabu_min"),
    ("fedrep", 1, ["method.arch=min"], "size/fedrep_min"),
    # head-only fine-tuning (FedBABU's and FedRep's) for every method that fine-tunes its whole
    # model, at this code (the NAS methods' earlier runs carried the tuning runs' flaw), on
    # both unreported seeds
    *[(method, config, ["method.finetune_scope=head"], f"finetune_head/seed={seed}/{method}",
       seed)
      for seed in (100, 101)
      for method, config in (("fedavg", 1), ("perfedrlnas", 0), ("hapfnas", 0))],
    # Where does PerFedRLNAS lose to FedAvg+FT with head-only fine-tuning? Its code path with
    # the search taken out one piece at a time, scored on the same samples as FedAvg (the
    # unreported seeds' test splits): every client trains and keeps the baselines' fits_all
    # architecture (= FedAvg through the supernet: slice, train, overlap-merge, BatchNorm
    # re-estimation) at FedAvg's lr and at its own; each client trains and keeps its own
    # largest subnet in budget (heterogeneous nested subnets, no sampling); the tuned search
    *[(method, config, ["eval_split=test", "method.finetune_scope=head", *knob],
       f"isolate/seed={seed}/{name}", seed)
      for seed in (100, 101)
      for method, config, knob, name in (
          ("fedavg", 1, [], "fedavg"),
          ("perfedrlnas", 0, [*FITS_ALL, "federation.lr=0.05"], "perfedrlnas_fits_all_lr0.05"),
          ("perfedrlnas", 0, FITS_ALL, "perfedrlnas_fits_all"),
          ("perfedrlnas", 0, LARGEST, "perfedrlnas_largest_in_budget"),
          ("perfedrlnas", 0, [], "perfedrlnas"))],
    # the one difference left between FedAvg and PerFedRLNAS on fits_all: the slice's
    # BatchNorm statistics re-estimated on the client's train split before it is evaluated
    # (and fine-tuned); FedAvg+FT keeps the averaged ones
    *[("perfedrlnas", 0, ["eval_split=test", "method.finetune_scope=head", *FITS_ALL,
                          "federation.lr=0.05", "method.bn_recalibrate=false"],
       f"isolate/seed={seed}/perfedrlnas_fits_all_lr0.05_no_bn_recalibrate", seed)
      for seed in (100, 101)],
    # the search's sampling costs most (tuned search vs each client's largest subnet trained
    # throughout): the last rounds train each client's personalized architecture instead
    # (method.exploit_rounds), with and without the BatchNorm re-estimation
    *[("perfedrlnas", 0, ["eval_split=test", "method.finetune_scope=head", *knob],
       f"isolate/seed={seed}/{name}", seed)
      for seed in (100, 101)
      for knob, name in (
          (["method.exploit_rounds=10"], "perfedrlnas_exploit_10"),
          (["method.exploit_rounds=20"], "perfedrlnas_exploit_20"),
          (["method.exploit_rounds=20", "method.bn_recalibrate=false"],
           "perfedrlnas_exploit_20_no_bn_recalibrate"),
          (["method.exploit_rounds=30"], "perfedrlnas_exploit_30"),
          (["method.exploit_rounds=20", "method.personal_head=true"],
           "perfedrlnas_exploit_20_personal_head"))],
    # HAPFNAS trains fixed heterogeneous subnets in heteroFedAvg: does the BatchNorm
    # re-estimation cost it what it costs PerFedRLNAS on fits_all?
    *[("hapfnas", 0, ["eval_split=test", "method.finetune_scope=head", *knob],
       f"isolate/seed={seed}/{name}", seed)
      for seed in (100, 101)
      for knob, name in (([], "hapfnas"),
                         (["method.bn_recalibrate=false"], "hapfnas_no_bn_recalibrate"))],
    # Does capacity pay when clients hold more data? At 500 samples a client the space's
    # architecture barely matters (FedBABU on the smallest model -0.015), so a budget-aware
    # search can at best match FedAvg+FT's fits_all. With 2000 samples a client (1200 train):
    # FedAvg+FT on fits_all, on the space's largest architecture (over most budgets: how much
    # capacity is worth, not a reportable baseline), and PerFedRLNAS searching then exploiting
    *[(method, config, ["eval_split=test", "method.finetune_scope=head",
                        "dataset.max_samples_per_client=2000", *knob],
       f"capacity/seed={seed}/{name}", seed)
      for seed in (100, 101)
      for method, config, knob, name in (
          ("fedavg", 1, [], "fedavg"),
          ("fedavg", 1, ["method.arch=max"], "fedavg_max"),
          # every client trains and keeps its own largest subnet in budget (no search):
          # all the capacity the budgets allow, through the supernet's merge
          ("perfedrlnas", 0, LARGEST, "perfedrlnas_largest_in_budget"),
          ("perfedrlnas", 0, ["method.exploit_rounds=20"], "perfedrlnas_exploit_20"))],
    # At 2000 samples each client's largest subnet in budget is 0.02 below FedAvg on fits_all
    # (0.9008 vs 0.9213): which part of the supernet path costs it? fits_all through the
    # path with and without the BatchNorm re-estimation, and the largest subnets, at FedAvg's lr
    *[("perfedrlnas", 0, ["eval_split=test", "method.finetune_scope=head",
                          "dataset.max_samples_per_client=2000", "federation.lr=0.05", *knob],
       f"capacity/seed={seed}/{name}", seed)
      for seed in (100, 101)
      for knob, name in (
          ([*FITS_ALL, "method.bn_recalibrate=false"],
           "perfedrlnas_fits_all_lr0.05_no_bn_recalibrate"),
          (FITS_ALL, "perfedrlnas_fits_all_lr0.05"),
          (LARGEST, "perfedrlnas_largest_in_budget_lr0.05"))],
    # What in the heterogeneity costs? The memory budgets push most clients' largest subnets
    # (and fits_all) to an input resolution of 0.75 or 0.875 of 28 px, so the merged supernet
    # serves three resolutions (the worst interference on digits, see "PerFedRLNAS on
    # digits"). The same runs in the space without an elastic resolution (28 px for every
    # subnet; fits_all is then the largest architecture at 28 px in every budget), at 2000
    # and at 500 samples a client
    *[(method, config, ["eval_split=test", "method.finetune_scope=head",
                        f"dataset.max_samples_per_client={n}", NO_RESOLUTION, *knob],
       f"resolution/n={n}/seed={seed}/{name}", seed)
      for n in (2000, 500)
      for seed in (100, 101)
      for method, config, knob, name in (
          ("fedavg", 1, [], "fedavg"),
          ("perfedrlnas", 0, [*LARGEST, "federation.lr=0.05"],
           "perfedrlnas_largest_in_budget_lr0.05"),
          ("perfedrlnas", 0, ["method.exploit_rounds=20"], "perfedrlnas_exploit_20"))],
]


def with_knob(overrides: list[str], knob: list[str]) -> list[str]:
    """``overrides`` with each of ``knob``'s keys set to the knob's value (replaced in place,
    appended if absent): Hydra refuses a key given twice."""
    values = dict(o.split("=", 1) for o in knob)
    out = [f"{key}={values.pop(key)}" if key in values else o
           for o, key in ((o, o.split("=", 1)[0]) for o in overrides)]
    return out + [f"{key}={value}" for key, value in values.items()]


def absent_knobs() -> list[str]:
    """The ``method.*`` keys the runs vary that this tree's methods do not have."""
    wanted: dict[str, set[str]] = {}
    for method, _, knob, *_ in RUNS:
        wanted.setdefault(method, set()).update(
            o.split("=", 1)[0] for o in knob if o.startswith("method."))
    missing = []
    for method, keys in sorted(wanted.items()):
        composed = compose([f"method={method}"])
        missing += [f"{method}: {key}" for key in sorted(keys)
                    if OmegaConf.select(composed, key, default=KeyError) is KeyError]
    return missing


def main() -> None:
    missing = absent_knobs()
    if missing:
        print("bench_diagnostics runs at commit ea544f9: this tree's methods lack "
              + ", ".join(missing) + " (they left the methods in issue 31)", file=sys.stderr)
        raise SystemExit(2)
    for method, config, knob, name, *rest in RUNS:
        seed = rest[0] if rest else 100
        path = BASE / "diagnostics" / name
        if (path / "summary.json").is_file():
            print(name, "done before")
            continue
        tuned = BASE / "tuning" / method / f"config={config}" / "summary.json"
        overrides = [o if not o.startswith("seed=") else f"seed={seed}"
                     for o in json.loads(tuned.read_text())["overrides"]]
        space = "darts_s2" if method == "fednas" else "mobilenetv3"
        cell = Cell(method, 0.3, seed, space, tuple(with_knob(overrides, knob)), path)
        problem = run_cell(cell, 3600)
        if problem is not None:
            print(name, "FAILED:", problem, flush=True)
            continue
        summary = json.loads((path / "summary.json").read_text())
        print(name, summary["personalized_acc_mean"],
              summary.get("personalized_acc_no_ft_mean"), flush=True)


if __name__ == "__main__":
    main()
