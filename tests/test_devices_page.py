"""The devices block of the results page: families, controls, Holm's correction, tiers and
the answer sentence, rendered from hand-made results (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfednas.options.facts import FACTS
from pfednas.report.bench_results import BenchResults, PresetView
from pfednas.report.collect import Run
from pfednas.report.devices import corrected, render_answer, render_devices
from pfednas.report.paired import holm, p_value

SEEDS = (0, 1, 2, 3, 4)
# the devices page's methods: every row of the method table in a family or a control
METHODS = tuple(m for m, f in FACTS.items() if f.device_family or f.control)
TIERS = ("r=1/16", "r=1/8", "r=1/4", "r=1/2", "r=1")


def test_holm_rejects_step_down_and_stops_at_the_first_that_fails() -> None:
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.01 < 0.05/3; 0.03 > 0.05/2
    assert holm([0.001, 0.02, 0.04]) == [True, True, True]   # 0.02 < 0.025, 0.04 < 0.05
    assert holm([0.2]) == [False] and holm([]) == []


def test_p_value_of_a_paired_difference() -> None:
    a = {s: 0.8 + 0.01 * s for s in SEEDS}
    assert p_value(a, a) == 1.0
    shifted = {s: v - 0.05 + (0.001 if s % 2 else -0.001) for s, v in a.items()}
    assert p_value(a, shifted) < 1e-4
    assert p_value({0: 0.5}, {0: 0.4}) is None


def test_a_loss_holds_after_holm_only_when_its_p_value_passes_its_step() -> None:
    base = {s: 0.80 + 0.003 * s for s in SEEDS}
    clear_loss = {s: v + 0.05 for s, v in base.items()}         # base loses by 0.05, no noise
    noisy = {s: v + (0.03 if s < 3 else -0.028) for s, v in base.items()}
    tie = {s: v + (0.001 if s % 2 else -0.001) for s, v in base.items()}
    out = corrected([("A", "B", base, clear_loss), ("A", "C", base, noisy),
                     ("A", "D", base, tie)])
    assert out[0].difference is not None and out[0].difference.verdict == "loses"
    assert out[0].holds
    assert out[1].difference is not None and out[1].difference.verdict == "inconclusive"
    assert not out[1].holds
    assert out[2].difference is not None and out[2].difference.verdict == "ties"
    assert out[2].holds
    assert "(holds after Holm)" in out[0].line()


def _results(acc: dict[str, float], tier_gain: dict[str, float]) -> BenchResults:
    """Every method at α 0.3 over five seeds: ``acc[method]`` ± a seed wobble, and its tiers
    from smallest to largest rising by ``tier_gain[method]`` a level."""
    by_seed, runs = {}, {}
    for method in METHODS:
        row = method + ("+ft" if FACTS[method].finetunes else "")
        by_seed[("fashion_mnist", row, 0.3, "mobilenetv3")] = {
            s: acc[method] + 0.002 * ((s * 7) % 5 - 2) for s in SEEDS}
        for s in SEEDS:
            tiers = [{"tier": t, "clients": 4, "accuracy": acc[method] + tier_gain[method]
                      * (i - 2), "params": 1000 * 2 ** i} for i, t in enumerate(TIERS)]
            runs[(method, 0.3, s)] = Run(Path(method), {"method": method, "seed": s,
                                                        "accuracy_by_tier": tiers}, [],
                                         {"dataset": {"alpha": 0.3}})
    preset = PresetView("devices", METHODS, (0.3,), SEEDS, {})
    return BenchResults(preset, (), by_seed, runs)


def test_the_devices_block_names_each_familys_strongest_and_answers_in_one_sentence() -> None:
    acc = {"perfedrlnas": 0.80, "hapfnas": 0.84, "fedavg": 0.70, "local": 0.72,
           "heterofl": 0.86, "fedrolex": 0.85, "largest_in_budget": 0.83,
           "random_in_budget": 0.78}
    gain = {m: 0.01 for m in METHODS} | {"heterofl": 0.03}
    text = render_devices(_results(acc, gain))
    assert ("Strongest of each family (fine-tuned): one model: Local 0.7200; sliced models: "
            "HeteroFL+FT 0.8600; searched models: HAPFNAS+FT 0.8400.") in text
    assert "- the strongest searched (HAPFNAS+FT) against the strongest of sliced models " \
           "(HeteroFL+FT): Δ −0.0200" in text
    assert "- PerFedRLNAS+FT against Largest in budget+FT: Δ −0.0300" in text
    assert "Holm's correction over these 6 at α 0.3" in text
    # tiers: smallest first, the largest − smallest gap per method
    assert "| method (fine-tuned) | r=1/16 | r=1/8 | r=1/4 | r=1/2 | r=1 | largest − smallest |" \
        in text
    assert "| HeteroFL | 0.800 (1.0k) |" in text and "| +0.120 |" in text
    answer = next(line for line in text.splitlines() if line.startswith("**Answer"))
    assert ("per-client search (HAPFNAS+FT) loses to per-client slicing (HeteroFL+FT, -0.0200)"
            in answer)
    assert "beats one model (Local, +0.1200)" in answer
    # HAPFNAS's tiers rise 0.01 a level, HeteroFL's 0.03: ahead on the smallest, behind on
    # the largest
    assert "smallest tier (r=1/16) +0.020" in answer and "largest tier (r=1) -0.060" in answer


def test_the_readme_answer_is_the_blocks_sentence_and_names_the_alpha_still_running() -> None:
    acc = {"perfedrlnas": 0.80, "hapfnas": 0.84, "fedavg": 0.70, "local": 0.72,
           "heterofl": 0.86, "fedrolex": 0.85, "largest_in_budget": 0.83,
           "random_in_budget": 0.78}
    results = _results(acc, dict.fromkeys(METHODS, 0.01))
    sentence = next(line for line in render_devices(results).splitlines()
                    if line.startswith("**Answer"))
    running = BenchResults(results.preset, (), results.by_seed, results.runs,
                           pending_alphas=((0.1, 12, 40, ()),))
    assert render_answer(results) == f"- {sentence}\n"
    assert render_answer(running) == (f"- {sentence}\n\nCells not all run yet, these figures "
                                       f"are interim: α 0.1: 12 of 40 cells, not shown.\n")


@pytest.mark.parametrize("missing", ["heterofl", "perfedrlnas"])
def test_the_block_renders_what_has_finished(missing: str) -> None:
    acc = dict.fromkeys(METHODS, 0.8)
    results = _results(acc, dict.fromkeys(METHODS, 0.0))
    kept = {k: v for k, v in results.by_seed.items() if not k[1].startswith(missing)}
    runs = {k: v for k, v in results.runs.items() if k[0] != missing}
    text = render_devices(BenchResults(results.preset, (), kept, runs))
    assert "Strongest of each family" in text
