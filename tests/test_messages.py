"""A round message's config is built from typed records and read back into the same ones."""

from __future__ import annotations

import pytest

from pfednas.options.baselines import FedNASOptions, FedRepOptions, FedRepRound
from pfednas.strategies import Budget, FedAvgFTStrategy
from pfednas.wire.messages import FINETUNE_SCOPE, Finetune, RoundConfig, Sgd


def test_the_records_round_trip_through_a_config() -> None:
    sgd = Sgd(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=16)
    entries = RoundConfig(server_round=3, local_epochs=2, lineage="/runs/a", fixed_arch="x:1")
    tune = Finetune(epochs=10, scope="head", both=True)

    config = {**sgd.to_config(), **entries.to_config(), **tune.to_config()}

    assert Sgd.read(config) == sgd and RoundConfig.read(config) == entries
    assert Finetune.read(config) == tune


def test_optional_entries_are_left_out_and_read_back_as_their_defaults() -> None:
    config = RoundConfig(server_round=1, local_epochs=1).to_config()

    assert set(config) == {"server_round", "local_epochs"}
    assert RoundConfig.read(config) == RoundConfig(server_round=1, local_epochs=1)
    assert Finetune.read({}) == Finetune() and Finetune.read({}, "head").scope == "head"


def test_a_methods_own_entries_are_declared_beside_its_options_and_read_back_typed() -> None:
    # FedRep's body epochs default to the federation's local epochs; FedNAS's α optimiser
    phases = FedRepOptions(head_epochs=2).round_entries(local_epochs=3)
    arch = FedNASOptions(arch_lr=0.01).round_entries()

    config = {**phases.to_config(), **arch.to_config()}
    received = {k: str(v) for k, v in config.items()}  # a transport that kept only text

    assert config == {"head_epochs": 2, "body_epochs": 3, "arch_lr": 0.01,
                      "arch_weight_decay": 1e-3}
    assert FedRepRound.read(received) == phases and type(arch).read(received) == arch
    with pytest.raises(KeyError, match="body_epochs"):
        FedRepRound.read({"head_epochs": 1})


def test_a_scope_outside_full_and_head_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=FINETUNE_SCOPE):
        Finetune.read({FINETUNE_SCOPE: "body"})


def test_the_servers_final_evaluation_config_reads_back_as_it_was_built() -> None:
    # Prepare: FedAvg+FT with head-only fine-tuning and both scopes reported (a tuning run)
    budget = Budget(num_clients=2, clients_per_round=2, num_rounds=2, local_epochs=3,
                    eval_every=1, round_timeout=1.0, seed=0, finetune_both=True)
    sgd = Sgd(lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=8)
    strategy = FedAvgFTStrategy(budget=budget, sgd=sgd, initial_arrays=[],
                                finetune_epochs=10, finetune_scope="head")

    # Execute
    final, quick = strategy.eval_config(2), strategy.eval_config(1)

    # Assert: the client reads what the server meant; an earlier evaluation is quick
    assert Sgd.read(final) == sgd
    assert RoundConfig.read(final) == RoundConfig(server_round=2, local_epochs=3)
    assert Finetune.read(final) == Finetune(epochs=10, scope="head", both=True)
    assert Finetune.read(quick).epochs == 0
