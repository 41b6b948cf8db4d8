"""SPIDER / Ditto without Flower's runtime: eq. 4's gradient, the searcher, the client's state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from pfednas.clients.common import ClientEnv
from pfednas.clients.spider import SpiderClient
from pfednas.clients.spider_state import LOCAL_KEY, SpiderOptions, checkpoint_path
from pfednas.data import ArrayDataset, ClientData
from pfednas.nas.progressive import SearchSchedule, decide_edge, search_round
from pfednas.nas.spider import shared_anchor
from pfednas.search import CellMask, DartsS2Space, TaskShape
from pfednas.train import proximal_penalty
from pfednas.wire.archcode import arch_from_code, arch_to_code

TASK = TaskShape(num_classes=4, in_channels=1, image_size=8)
CONFIG = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "batch_size": 16, "local_epochs": 1}


def tiny_space() -> DartsS2Space:
    return DartsS2Space(channels=4, layers=3)


def tiny_data(seed: int = 0) -> ClientData:
    rng = np.random.default_rng(seed)

    def split(n: int) -> ArrayDataset:
        y = rng.integers(0, TASK.num_classes, n)
        x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
        return ArrayDataset(x=x.astype(np.float32), y=y.astype(np.int64))

    return ClientData(train=split(32), val=split(16), test=split(16))


def make_client(state: RecordDict, *, search: bool = True, checkpoint_dir: Path | None = None,
                fingerprint: str = "run-a") -> SpiderClient:
    env = ClientEnv(client_id=3, data=tiny_data(), device=torch.device("cpu"), seed=7)
    return SpiderClient(env, tiny_space(), TASK, SpiderOptions(warmup_rounds=1, search=search),
                        state, fingerprint=fingerprint,
                        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir))


def global_arrays() -> list[np.ndarray]:
    torch.manual_seed(0)
    return tiny_space().build_supernet(num_classes=4, in_channels=1, image_size=8).state_arrays()


def test_penalty_gradient_is_lambda_times_difference_on_shared_coordinates_only() -> None:
    # Prepare: "a" is shared with the global model, "b" exists only locally
    v = {"a": torch.tensor([1.0, -2.0, 3.0], requires_grad=True),
         "b": torch.tensor([5.0], requires_grad=True)}
    anchor = {"a": torch.tensor([0.5, 0.0, 4.0]), "c": torch.tensor([9.0])}
    lam = 0.3

    # Execute
    penalty = proximal_penalty(v, anchor, lam)
    penalty.backward()

    # Assert: value (λ/2)‖v − w‖² and gradient λ(v − w) / 0
    assert penalty.item() == pytest.approx(0.5 * lam * (0.25 + 4.0 + 1.0))
    torch.testing.assert_close(v["a"].grad, lam * torch.tensor([0.5, -2.0, -1.0]))
    assert v["b"].grad is None or torch.count_nonzero(v["b"].grad) == 0


def test_shared_anchor_covers_exactly_the_local_architecture() -> None:
    space = tiny_space()
    supernet = space.build_supernet(num_classes=4, in_channels=1, image_size=8)
    small = space.arch_from_str("darts_s2:n_" + "s" * 14 + "-r_" + "c" * 14)
    local = supernet.extract(small)

    anchor = shared_anchor(local, supernet.net)

    assert set(anchor) == {n for n, _ in local.named_parameters()}
    assert len(anchor) < len(list(supernet.net.parameters()))


def test_searcher_keeps_the_operation_whose_removal_hurts_most() -> None:
    # Prepare: on (normal, edge 2) dropping sep costs 0.6 accuracy, dropping skip only 0.1
    mask = np.ones((2, 14, 2), dtype=bool)

    def accuracy(m: np.ndarray) -> float:
        return 0.9 - 0.6 * (not m[0, 2, 1]) - 0.1 * (not m[0, 2, 0])

    # Execute
    new, decision = decide_edge(mask, 0, 2, accuracy)

    # Assert: sep kept, skip dropped, nothing else touched
    assert decision.kept == 1 and decision.accuracy_without == pytest.approx((0.8, 0.3))
    assert new[0, 2].tolist() == [False, True]
    assert new.sum() == mask.sum() - 1


def test_search_schedule_warms_up_then_decides_one_edge_per_cell_type() -> None:
    mask, decided = np.ones((2, 14, 2), bool), np.zeros((2, 14), bool)
    schedule = SearchSchedule(warmup_rounds=2, recovery_rounds=2)
    rng = np.random.default_rng(0)
    seen = []
    for t in range(6):
        mask, decided, decisions = search_round(mask, decided, t, schedule, rng, lambda m: 0.5)
        seen.append(len(decisions))
    assert seen == [0, 0, 2, 0, 2, 0]
    assert decided.sum(axis=1).tolist() == [2, 2]
    assert (mask.sum(axis=2)[decided] == 1).all() and (mask.sum(axis=2)[~decided] == 2).all()


def test_arch_code_round_trip() -> None:
    space = tiny_space()
    arch = space.sample(np.random.default_rng(1))
    assert arch_from_code(space, arch_to_code(space, arch)) == arch


def test_reply_is_exactly_the_global_supernet_and_local_state_stays_in_context() -> None:
    state = RecordDict()
    client = make_client(state)
    sent = global_arrays()

    arrays, n, metrics = client.fit(sent, {**CONFIG, "server_round": 1})

    assert [a.shape for a in arrays] == [a.shape for a in sent]
    assert [a.dtype for a in arrays] == [a.dtype for a in sent]
    assert n == 32 and metrics["phase"] == 1 and LOCAL_KEY in state
    assert not all(np.array_equal(a, b) for a, b in zip(arrays, sent, strict=True))


def test_state_survives_rounds_and_a_restart_from_checkpoint_dir(tmp_path: Path) -> None:
    # Prepare / Execute: three rounds with one Context.state (t_s = 1, τ = 1)
    state = RecordDict()
    client = make_client(state, checkpoint_dir=tmp_path)
    params, decided, sizes = global_arrays(), [], []
    for server_round in (1, 2, 3):
        params, _, metrics = make_client(state, checkpoint_dir=tmp_path).fit(
            params, {**CONFIG, "server_round": server_round})
        decided.append(metrics["decided_edges"])
        sizes.append(metrics["num_params"])
    _, _, evaluation = client.evaluate([], {**CONFIG, "server_round": 3})

    # Assert: one edge per cell type per round after warm-up; dropped ops leave the model
    assert decided == [0, 2, 4]
    assert sizes[0] > sizes[1] > sizes[2] == evaluation["num_params"]
    arch = arch_from_code(tiny_space(), int(evaluation["arch_code"]))
    assert sum(len(set(e)) == 1 for e in CellMask.from_array(
        tiny_space().mask(arch).to_array()).normal) >= 2

    # Execute: a restarted node (empty Context.state) resumes from checkpoint-dir
    assert checkpoint_path(tmp_path, 3).is_file()
    _, _, resumed = make_client(RecordDict(), checkpoint_dir=tmp_path).fit(
        params, {**CONFIG, "server_round": 4})
    _, _, stale = make_client(RecordDict(), checkpoint_dir=tmp_path, fingerprint="run-b").fit(
        params, {**CONFIG, "server_round": 4})

    assert resumed["decided_edges"] == 6 and resumed["phase"] == 2
    assert stale["decided_edges"] == 0  # another run's file is not restored


def test_ditto_keeps_its_architecture_fixed() -> None:
    state = RecordDict()
    params = global_arrays()
    codes = []
    for server_round in (1, 2, 3):
        params, _, metrics = make_client(state, search=False).fit(
            params, {**CONFIG, "server_round": server_round})
        codes.append(metrics["arch_code"])
    assert len(set(codes)) == 1
    assert arch_from_code(tiny_space(), codes[0]) == tiny_space().max_arch()


@pytest.mark.parametrize("search", [True, False])
def test_finetuned_evaluation_reports_the_pair_and_keeps_the_local_model(search: bool) -> None:
    # Prepare: two rounds of training (SPIDER has decided edges by then, Ditto has not)
    state = RecordDict()
    params = global_arrays()
    for server_round in (1, 2):
        params, _, _ = make_client(state, search=search).fit(
            params, {**CONFIG, "server_round": server_round})
    kept = [np.array(state[LOCAL_KEY][k].numpy()) for k in state[LOCAL_KEY]]
    client = make_client(state, search=search)
    plain_config = {**CONFIG, "server_round": 2}

    # Execute: as published, then after F = 3 epochs at each scope (a tuning run's reply)
    _, _, plain = client.evaluate([], plain_config)
    _, _, tuned = client.evaluate([], {**plain_config, "finetune_epochs": 3,
                                       "finetune_scope": "full", "finetune_both": True})
    _, _, again = client.evaluate([], plain_config)

    # Assert: the figure as published rides along; fine-tuning trained a copy only
    assert tuned["accuracy_no_ft"] == plain["accuracy"] == again["accuracy"]
    assert tuned["accuracy"] == tuned["accuracy_ft_full"]
    assert {"accuracy_ft_head", "arch_code"} <= set(tuned)
    assert tuned["sample_passes"] == 3 * 32 and "accuracy_no_ft" not in plain
    assert tuned["arch_code"] == plain["arch_code"] and tuned["num_params"] == plain["num_params"]
    assert all(np.array_equal(a, np.array(state[LOCAL_KEY][k].numpy()))
               for a, k in zip(kept, state[LOCAL_KEY], strict=True))
