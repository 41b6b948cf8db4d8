"""Choosing the policy optimiser's default by measurement (pure numpy, seconds).

    .venv/bin/python benchmarks/bench_policy.py

A synthetic per-client search problem shaped like the real one: D dimensions of
3 choices; the accuracy of an architecture is a base value plus, per dimension,
a quality in [0, 0.1] / D * 3 of its choice, plus noise (sd 0.05, like the
validation accuracy of a small client split); the reward is eq. 8 with a
moving baseline. After V visits (PerFedRLNAS visits a client R·N/K times:
5-30 in the budgets used here) we report the expected accuracy of the argmax
architecture's regret against the best one, and how often a dimension has
locked (> 0.99) onto a choice that is not its best: premature saturation.
"""

from __future__ import annotations

import numpy as np

from pfednas.nas.policy import (
    PolicyOptimizer,
    PolicyState,
    argmax_indices,
    probabilities,
    reinforce_update,
)

D, C, NOISE, TRIALS = 12, 3, 0.05, 200


def trial(opt: PolicyOptimizer, visits: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0, 0.3 / D, size=(D, C))
    sizes = [C] * D
    state, history = PolicyState.uniform(sizes), []
    for _ in range(visits):
        probs = probabilities(state.logits, sizes)
        choice = [int(rng.choice(C, p=p)) for p in probs]
        acc = 0.6 + quality[np.arange(D), choice].sum() + rng.normal(0, NOISE)
        history.append(acc)
        reward = acc - float(np.mean(history[-10:]))
        state = reinforce_update(state, sizes, choice, reward, opt)
    best = quality.max(axis=1).sum()
    chosen = quality[np.arange(D), argmax_indices(state.logits, sizes)].sum()
    probs = probabilities(state.logits, sizes)
    locked_wrong = np.mean([p.max() > 0.99 and int(np.argmax(p)) != int(np.argmax(q))
                            for p, q in zip(probs, quality, strict=True)])
    return float(best - chosen), float(locked_wrong)


def main() -> None:
    candidates = [PolicyOptimizer("sgd", lr) for lr in (0.3, 1.0, 3.0, 10.0)]
    candidates += [PolicyOptimizer("adam", lr) for lr in (0.05, 0.1, 0.5)]
    print("| optimiser | lr | visits | regret of argmax arch (acc) "
          "| dims locked on a wrong choice |")
    print("|---|---|---|---|---|")
    for visits in (5, 30, 200):
        for opt in candidates:
            results = np.array([trial(opt, visits, s) for s in range(TRIALS)])
            print(f"| {opt.kind} | {opt.lr} | {visits} | {results[:, 0].mean():.4f} | "
                  f"{100 * results[:, 1].mean():.1f} % |")


if __name__ == "__main__":
    main()
