"""PerFedRLNAS server state without Flower: budgets, personalized architectures, checkpoints."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pfednas.nas.policy import PolicyState
from pfednas.search import get_space
from pfednas.strategies import Budget, PerFedRLNASOptions, PerFedRLNASStrategy
from pfednas.strategies.budget import Roster
from tests.conftest import SGD, spread

BUDGET = Budget(num_clients=3, clients_per_round=2, num_rounds=2, local_epochs=1,
                eval_every=1, round_timeout=10, seed=0)


def make_strategy(**options: object) -> PerFedRLNASStrategy:
    space = get_space("vit", stem_width=8, conv_widths=[[8, 12], [12, 16]], conv_depths=[1, 2],
                      conv_kernels=[3, 5], transformer_widths=[[16, 24], [24, 32]],
                      transformer_depths=[1, 2], heads=[1, 2], head_dim=8, mlp_ratios=[2, 3])
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    return PerFedRLNASStrategy(budget=BUDGET, sgd=SGD,
                               supernet=supernet, options=PerFedRLNASOptions(**options),  # type: ignore[arg-type]
                               roster=Roster(profiles=spread(supernet, 3)))


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


def test_finetune_scope_is_the_whole_slice_or_its_head() -> None:
    with pytest.raises(ValueError, match="finetune_scope"):
        PerFedRLNASOptions(**{"finetune_scope": "body"})


@pytest.mark.parametrize("control", ["final_arch", "warmup_rounds", "warmup_arch",
                                     "train_scope", "merge_weighting", "budget_reward",
                                     "personal_bn", "hardware"])
def test_the_options_that_lost_left_the_method(control: str) -> None:
    # the controls of docs/notes/2026-11-24-one-knob-diagnostics.md (at commit ea544f9), the
    # levers that lost (at 1f8593c) and the hardware, now federation.hardware (docs/TUNING.md)
    value = {"final_arch": "policy", "warmup_rounds": 0, "warmup_arch": "largest_in_budget",
             "train_scope": "full", "merge_weighting": "uniform", "budget_reward": 0.2,
             "personal_bn": True, "hardware": {"memory_low": 0.5}}[control]
    with pytest.raises(TypeError, match="unexpected keyword"):
        PerFedRLNASOptions(**{control: value})


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
