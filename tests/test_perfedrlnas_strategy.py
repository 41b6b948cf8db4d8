"""PerFedRLNAS server state without Flower: budgets, personalized architectures, checkpoints."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pfednas.methods import fits_all_arch
from pfednas.nas.policy import PolicyState
from pfednas.search import get_space
from pfednas.strategies import Budget, PerFedRLNASOptions, PerFedRLNASStrategy

BUDGET = Budget(num_clients=3, clients_per_round=2, num_rounds=2, local_epochs=1,
                eval_every=1, round_timeout=10, seed=0)


def make_strategy(**options: object) -> PerFedRLNASStrategy:
    space = get_space("vit", stem_width=8, conv_widths=[[8, 12], [12, 16]], conv_depths=[1, 2],
                      conv_kernels=[3, 5], transformer_widths=[[16, 24], [24, 32]],
                      transformer_depths=[1, 2], heads=[1, 2], head_dim=8, mlp_ratios=[2, 3])
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    return PerFedRLNASStrategy(budget=BUDGET, train_config={"batch_size": 16},
                               supernet=supernet,
                               options=PerFedRLNASOptions.from_config(options))


def test_personalized_arch_respects_the_memory_budget() -> None:
    strategy = make_strategy()
    sizes = strategy.sizes
    logits = np.concatenate([np.eye(n)[n - 1] * 5.0 for n in sizes])  # favour the largest
    strategy.policies[0] = PolicyState(logits, np.zeros_like(logits), np.zeros_like(logits))
    big = strategy.space.max_arch()
    small = strategy.space.min_arch()
    budget = (strategy.memory(big) + strategy.memory(small)) / 2
    strategy.profiles[0] = replace(strategy.profiles[0], memory_bytes=budget)

    arch = strategy.personalized_arch(0)

    assert arch != big
    assert strategy.memory(arch) <= budget


def test_largest_in_budget_control_ignores_the_policy() -> None:
    # Prepare: both strategies' client 0 favours the smallest subnet; a mid budget
    paper, control = make_strategy(), make_strategy(final_arch="largest_in_budget")
    for strategy in (paper, control):
        sizes = strategy.sizes
        logits = np.concatenate([np.eye(n)[0] * 5.0 for n in sizes])
        strategy.policies[0] = PolicyState(logits, np.zeros_like(logits), np.zeros_like(logits))
        budget = (strategy.memory(strategy.space.max_arch())
                  + strategy.memory(strategy.space.min_arch())) / 2
        strategy.profiles[0] = replace(strategy.profiles[0], memory_bytes=budget)

    # Execute
    by_policy, by_size = paper.personalized_arch(0), control.personalized_arch(0)

    # Assert: the paper's pick is the policy's argmax; the control's the largest that fits
    assert by_policy == paper.space.min_arch()
    assert by_size == control.largest_in_budget(0) != by_policy
    assert control.memory(by_size) <= control.profiles[0].memory_bytes
    with pytest.raises(ValueError, match="final_arch"):
        PerFedRLNASOptions.from_config({"final_arch": "max"})
    with pytest.raises(ValueError, match="finetune_scope"):
        PerFedRLNASOptions.from_config({"finetune_scope": "body"})
    with pytest.raises(ValueError, match="train_scope"):
        PerFedRLNASOptions.from_config({"train_scope": "head"})


def test_fits_all_control_gives_every_client_the_baselines_architecture() -> None:
    # Prepare: the fits_all control for training (warm-up) and for the final model
    strategy = make_strategy(warmup_rounds=2, warmup_arch="fits_all", final_arch="fits_all")

    # Execute
    trained = {strategy.sample_arch(cid, server_round=1) for cid in range(3)}
    final = {strategy.personalized_arch(cid) for cid in range(3)}

    # Assert: one architecture for all, the one the baselines' fits_all search returns
    expected = fits_all_arch(strategy.supernet, BUDGET.num_clients, BUDGET.seed, 16)
    assert trained == final == {expected}
    assert make_strategy(warmup_rounds=2).sample_arch(0, 1) == strategy.largest_in_budget(0)

    # ... and within the tightest budget when something larger than the smallest fits
    roomy = make_strategy(final_arch="fits_all")
    mid = (roomy.memory(roomy.space.max_arch()) + roomy.memory(roomy.space.min_arch())) / 2
    roomy.profiles = {i: replace(p, memory_bytes=mid * (1 + i))
                      for i, p in roomy.profiles.items()}
    arch = roomy.personalized_arch(2)
    assert roomy.memory(arch) <= mid and arch != roomy.space.min_arch()
    assert roomy.largest_in_budget(2) != arch  # client 2's own budget admits more
    with pytest.raises(ValueError, match="warmup_arch"):
        PerFedRLNASOptions.from_config({"warmup_arch": "policy"})


def test_checkpoint_state_round_trips() -> None:
    strategy = make_strategy()
    strategy.history = {1: 0.5}
    strategy.policies[2] = PolicyState(np.arange(sum(strategy.sizes), dtype=float),
                                       np.ones(sum(strategy.sizes)),
                                       np.ones(sum(strategy.sizes)), 4)
    state = strategy.state()

    other = make_strategy()
    other.load_state(state)

    assert other.history == {1: 0.5}
    np.testing.assert_array_equal(other.policies[2].logits, strategy.policies[2].logits)
    assert other.policies[2].steps == 4
    for a, b in zip(other.supernet.state_arrays(), strategy.supernet.state_arrays(), strict=True):
        np.testing.assert_array_equal(a, b)
