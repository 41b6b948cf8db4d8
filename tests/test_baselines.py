"""FedRep, FedBABU and FedNAS without Flower's runtime: what trains, what travels, what averages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pfednas.body_head import StateSplit, put, take, train_part
from pfednas.clients import FedBABUClient, FedRepClient
from pfednas.clients.common import ClientEnv
from pfednas.clients.fedrep import HEAD_KEY
from pfednas.config import compose, settings_from_cfg
from pfednas.data import ArrayDataset, ClientData
from pfednas.methods import (
    METHODS,
    fixed_arch,
    fixed_model_fn,
    initial_body,
    parse_fixed_arch,
    seeded_supernet,
)
from pfednas.nas.darts_search import ArchHyper, search_epochs
from pfednas.nas.fedavg import weighted_average
from pfednas.search import DartsS2Space, TaskShape
from pfednas.search.darts_mixed import ALPHA_KEYS, DartsMixedNet
from pfednas.strategies import (
    Budget,
    FedBABUOptions,
    FedBABUStrategy,
    FedNASOptions,
    FedNASStrategy,
    FedRepOptions,
    FedRepStrategy,
)
from pfednas.strategies.budget import Roster
from pfednas.train import Hyper, get_arrays, set_arrays
from pfednas.wire.messages import Sgd
from tests.conftest import arrays_of

TASK = TaskShape(num_classes=10, in_channels=1, image_size=8)
CONFIG = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 8,
          "server_round": 1, "local_epochs": 1}
HYPER = Hyper(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=8)


def _dataset(n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.standard_normal((n, 1, 8, 8)).astype(np.float32),
                        rng.integers(0, 10, n).astype(np.int64))


ENV = ClientEnv(client_id=0, data=ClientData(_dataset(24, 1), _dataset(16, 2), _dataset(16, 3)),
                device=torch.device("cpu"), seed=0)


def _settings(method: str) -> Any:
    return settings_from_cfg(compose([f"method={method}", "method.arch=min"]))


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))




def _budget(k: int = 4) -> Budget:
    return Budget(num_clients=k, clients_per_round=2, num_rounds=3, local_epochs=1, eval_every=3,
                  round_timeout=60.0, seed=0)


def _sent(strategy: Any) -> list[Message]:
    """Round 1's training messages (node id of client c: 100 + c)."""
    strategy.node_of = {c: 100 + c for c in range(strategy.budget.num_clients)}
    return list(strategy.record(strategy.configure_train(1)))


def _reply(strategy: Any, cid: int, arrays: list[np.ndarray], n: int) -> Message:
    """A training reply of client ``cid``, as its node would send it."""
    TaskIdentity.node_id = strategy.node_of[cid]
    content = RecordDict({"arrays": ArrayRecord(numpy_ndarrays=arrays), "metrics": MetricRecord(
        {"client_id": cid, "num_examples": n, "train_loss": 1.0, "train_seconds": 0.1})})
    return Message(content, dst_node_id=0, message_type=MessageType.TRAIN)


# -- the split and the fixed model ----------------------------------------------------------------
def test_fixed_model_is_the_seeded_supernet_subnet_and_splits_by_the_networks_own_head() -> None:
    settings = _settings("fedrep")
    space = settings.search_space.build()
    model = fixed_model_fn(settings)()
    split = StateSplit.of(model)

    assert model.config == space.net_config(parse_fixed_arch(space, "min"), TASK)
    assert sorted(split.head_keys()) == sorted(model.split_body_head()[1]) == [
        "classifier.bias", "classifier.weight"]
    assert any(k.endswith("running_mean") for k in split.body_keys())  # BN statistics: body
    assert _same(take(get_arrays(model), split.body), initial_body(settings))
    assert _same(get_arrays(fixed_model_fn(settings)()), get_arrays(model))  # same seeded init
    arrays = get_arrays(model)
    assert _same(put(arrays, split.head, take(arrays, split.head)), arrays)


# -- FedRep ---------------------------------------------------------------------------------------
def test_fedrep_head_phase_changes_only_the_head() -> None:
    client = FedRepClient(ENV, fixed_model_fn(_settings("fedrep")), RecordDict(),
                          fixed_arch(_settings("fedrep")))
    net, split = client.model(initial_body(_settings("fedrep")))
    before = get_arrays(net)

    train_part(net, split.head_keys(), ENV.data.train, epochs=2, hyper=HYPER,
               generator=torch.Generator().manual_seed(0), device=ENV.device)

    after = get_arrays(net)
    assert _same(take(after, split.body), take(before, split.body))  # BN statistics included
    assert not _same(take(after, split.head), take(before, split.head))
    assert all(p.requires_grad for p in net.parameters())  # restored


def test_fedrep_client_keeps_its_head_and_sends_only_the_body() -> None:
    body0 = initial_body(_settings("fedrep"))
    state = RecordDict()
    client = FedRepClient(ENV, fixed_model_fn(_settings("fedrep")), state,
                          fixed_arch(_settings("fedrep")))
    _, split = client.model(body0)
    head0 = take(get_arrays(fixed_model_fn(_settings("fedrep"))()), split.head)

    body1, n, metrics = client.fit(body0, {**CONFIG, "head_epochs": 1, "body_epochs": 1})

    assert n == 24 and metrics["train_loss"] > 0
    assert [a.shape for a in body1] == [a.shape for a in body0]
    assert not _same(body1, body0)
    record = state[HEAD_KEY]
    assert isinstance(record, ArrayRecord)
    head1 = record.to_numpy_ndarrays()
    assert not _same(head1, head0)
    net, _ = client.model(body1)  # the next round starts from the kept head
    assert _same(take(get_arrays(net), split.head), head1)


def test_fedrep_strategy_sends_and_averages_only_the_body(run_id: None) -> None:
    body = initial_body(_settings("fedrep"))
    strategy = FedRepStrategy(budget=_budget(), sgd=Sgd.read(CONFIG), initial_body=body,
                              options=FedRepOptions(head_epochs=2))

    messages = _sent(strategy)
    sent = arrays_of(messages[0])
    config = messages[0].content["config"]
    rng = np.random.default_rng(0)
    updates = [[np.asarray(a + rng.standard_normal(a.shape)).astype(a.dtype) for a in body]
               for _ in range(2)]
    first, second = strategy.train_clients(1)
    strategy.aggregate_train(1, [_reply(strategy, first, updates[0], 10),
                                 _reply(strategy, second, updates[1], 30)])

    assert _same(sent, body)
    assert config["head_epochs"] == 2 and config["body_epochs"] == 1  # type: ignore[index]
    assert _same(strategy.arrays, weighted_average([(updates[0], 10.0), (updates[1], 30.0)]))


# -- FedBABU --------------------------------------------------------------------------------------
def test_fedbabu_head_stays_bit_identical_across_rounds_until_fine_tuning() -> None:
    settings = _settings("fedbabu")
    built: list[torch.nn.Module] = []
    make = fixed_model_fn(settings)

    def model_fn() -> Any:
        built.append(make())
        return built[-1]

    client = FedBABUClient(ENV, model_fn, fixed_arch(settings))
    split = StateSplit.of(make())
    head0 = take(get_arrays(make()), split.head)

    body = initial_body(settings)
    for server_round in (1, 2):
        new_body, _, _ = client.fit(body, {**CONFIG, "server_round": server_round})
        assert not _same(new_body, body)
        assert _same(take(get_arrays(built[-1]), split.head), head0)
        body = new_body
    client.evaluate(body, {**CONFIG, "finetune_scope": "head", "finetune_epochs": 1})

    tuned = get_arrays(built[-1])
    assert not _same(take(tuned, split.head), head0)
    assert _same(take(tuned, split.body), body)  # head fine-tuning: body frozen


@pytest.mark.parametrize("mode", ["head", "full"])
def test_fedbabu_strategy_averages_the_body_and_sends_fine_tuning_mode(run_id: None,
                                                                       mode: str) -> None:
    # "head" is FedBABU's default: between da6c3ef and its fix the evaluation message said
    # "full" whatever the option (FedAvg+FT's finetune_scope default overrode it)
    body = initial_body(_settings("fedbabu"))
    strategy = FedBABUStrategy(budget=_budget(), sgd=Sgd.read(CONFIG), initial_body=body,
                               options=FedBABUOptions(finetune_scope=mode, finetune_epochs=3))
    _sent(strategy)
    updates = [[np.full_like(a, i) for a in body] for i in (1, 3)]
    first, second = strategy.train_clients(1)

    strategy.aggregate_train(1, [_reply(strategy, first, updates[0], 1),
                                 _reply(strategy, second, updates[1], 1)])
    messages = list(strategy.record(strategy.configure_evaluate(3)))

    assert len(messages) == 4
    config = messages[0].content["config"]
    assert config["finetune_scope"] == mode and config["finetune_epochs"] == 3  # type: ignore[index]
    assert _same(arrays_of(messages[0]),
                 weighted_average([(updates[0], 1.0), (updates[1], 1.0)]))



@pytest.mark.parametrize(("overrides", "mode"),
                         [([], "head"), (["method.finetune_scope=full"], "full")])
def test_fedbabu_built_from_its_config_fine_tunes_the_mode_it_names(
        run_id: None, overrides: list[str], mode: str) -> None:
    # the whole path a run takes: method=fedbabu's config -> the registry's strategy -> the
    # final evaluation message the client reads its fine-tuning mode from
    settings = settings_from_cfg(compose(["method=fedbabu", "method.arch=min", *overrides]))
    strategy = METHODS["fedbabu"].strategy(settings, _budget(), Sgd.read(CONFIG), Roster())
    strategy.node_of = {c: 100 + c for c in range(strategy.budget.num_clients)}

    messages = list(strategy.record(strategy.configure_evaluate(3)))

    assert {m.content["config"]["finetune_scope"] for m in messages} == {mode}  # type: ignore[index]

# -- FedNAS ---------------------------------------------------------------------------------------
SPACE = DartsS2Space(channels=4, layers=3, steps=2, multiplier=2)


def test_mixed_net_alphas_are_state_and_derive_extract_a_one_op_network() -> None:
    net = DartsMixedNet(SPACE, TASK)
    with torch.no_grad():
        net.alpha_normal[:, 1] = 1.0  # sep_conv everywhere in normal cells
        net.alpha_reduce[0, 0] = 1.0  # skip on the first reduce edge, rest tied -> skip (argmax)

    arch = net.derive()
    sub = net.extract(arch)
    state = net.net.state_dict()

    assert set(ALPHA_KEYS) <= set(net.state_dict())
    assert SPACE.mask(arch).normal == ((False, True),) * SPACE.num_edges
    assert SPACE.mask(arch).reduce == ((True, False),) * SPACE.num_edges
    assert all(torch.equal(v, state[k]) for k, v in sub.state_dict().items())
    assert sub(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_search_epochs_move_both_alpha_and_weights() -> None:
    net = DartsMixedNet(SPACE, TASK)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    search_epochs(net, ENV.data.train, ENV.data.val, epochs=1, hyper=HYPER, arch=ArchHyper(),
                  generator=torch.Generator().manual_seed(0), device=ENV.device)

    after = net.state_dict()
    assert not torch.equal(after["alpha_normal"], before["alpha_normal"])
    assert not torch.equal(after["alpha_reduce"], before["alpha_reduce"])
    assert not torch.equal(after["net.stem.0.weight"], before["net.stem.0.weight"])


def test_fednas_sends_and_averages_alpha_then_evaluates_the_derived_arch(run_id: None) -> None:
    net = DartsMixedNet(SPACE, TASK)
    keys = list(net.state_dict())
    alpha = [keys.index(k) for k in ALPHA_KEYS]
    strategy = FedNASStrategy(budget=_budget(), sgd=Sgd.read(CONFIG), net=net,
                              options=FedNASOptions(finetune_epochs=2))
    start = [a.copy() for a in strategy.arrays]

    sent = arrays_of(_sent(strategy)[0])
    replies = []
    for cid, shift in zip(strategy.train_clients(1), (1.0, 3.0), strict=True):
        arrays = [a.copy() for a in sent]
        arrays[alpha[0]][:, 1] += shift  # both clients prefer sep_conv in normal cells
        replies.append(_reply(strategy, cid, arrays, 5))
    strategy.aggregate_train(1, replies)
    outgoing = strategy.record(strategy.configure_evaluate(3))
    evaluation = list(outgoing)

    assert [sent[i].shape for i in alpha] == [(SPACE.num_edges, 2)] * 2
    assert np.allclose(strategy.arrays[alpha[0]][:, 1], start[alpha[0]][:, 1] + 2.0)
    assert np.array_equal(strategy.arrays[alpha[1]], start[alpha[1]])
    arch = SPACE.arch_from_str(str(evaluation[0].content["config"]["arch"]))  # type: ignore[index]
    assert SPACE.mask(arch).normal == ((False, True),) * SPACE.num_edges
    sub = SPACE.build_net(SPACE.mask(arch), TASK)
    set_arrays(sub, arrays_of(evaluation[0]))
    assert outgoing.plan == arch  # handed to aggregate_evaluate, which names it in every row


@pytest.mark.parametrize("finetune_epochs", [0, 2])
def test_fednas_client_evaluates_with_statistics_of_the_derived_net_not_the_mixed_one(
        finetune_epochs: int) -> None:
    # Prepare: a derived network's arrays, and the same with its BatchNorm running
    # statistics replaced by nonsense (what the mixed supernet's statistics are to it)
    from pfednas.clients.fednas import FedNASClient

    mixed = DartsMixedNet(SPACE, TASK)
    arch = mixed.derive()
    sub = mixed.extract(arch)
    keys = list(sub.state_dict())
    arrays = get_arrays(sub)
    stats = [i for i, k in enumerate(keys) if k.endswith(("running_mean", "running_var"))]
    corrupt = [a.copy() for a in arrays]
    for i in stats:
        corrupt[i] = corrupt[i] * 50.0 + 7.0
    config = {**CONFIG, "arch": arch.to_str(), "split": "test", "finetune_epochs": finetune_epochs}

    def reply(arrays: list[np.ndarray], recalibrate: bool) -> tuple[float, float]:
        client = FedNASClient(ENV, SPACE, TASK, bn_recalibrate=recalibrate)
        loss, _, metrics = client.evaluate(arrays, config)
        return loss, metrics["accuracy"]

    # Execute / Assert: re-estimated, the received statistics do not matter; kept, they do
    assert stats
    assert reply(arrays, True) == reply(corrupt, True)
    assert reply(arrays, False) != reply(corrupt, False)


@pytest.mark.parametrize("scope", ["head", "full"])
def test_subnet_finetuning_scope_head_leaves_the_body_as_cut(
        scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a PerFedRLNAS / HAPFNAS personalized slice and the net its +FT evaluates
    from pfednas.clients import common, subnet

    supernet = seeded_supernet(settings_from_cfg(compose(["method=perfedrlnas"])))
    space = supernet.space
    arch = space.min_arch()
    cut = supernet.slice(arch)
    evaluated: list[torch.nn.Module] = []
    reply = common.test_reply
    monkeypatch.setattr(common, "test_reply",
                        lambda net, env, tuned, **kw: (evaluated.append(net),
                                                       reply(net, env, tuned, **kw))[1])
    client = subnet.SubnetClient(ENV, space, TASK, bn_recalibrate=False)

    # Execute
    _, _, metrics = client.evaluate(cut, {**CONFIG, "arch": arch.to_str(), "split": "test",
                                          "finetune_epochs": 2, "finetune_scope": scope})

    # Assert: head scope trains the head only (body, BatchNorm statistics included, as cut);
    # full scope trains the body too; both fine-tune exactly 2 epochs
    split = StateSplit.of(evaluated[0])
    after = get_arrays(evaluated[0])
    assert _same(take(after, split.body), take(cut, split.body)) == (scope == "head")
    assert not _same(take(after, split.head), take(cut, split.head))
    assert metrics["sample_passes"] == 2 * len(ENV.data.train.y)
    with pytest.raises(ValueError, match="finetune"):
        client.evaluate(cut, {**CONFIG, "arch": arch.to_str(), "split": "test",
                              "finetune_epochs": 1, "finetune_scope": "body"})


def built_models(client: Any) -> list[torch.nn.Module]:
    """Every network ``client.model`` builds from now on, in order (a spy on the client)."""
    built: list[torch.nn.Module] = []
    original = client.model

    def spy(parameters: list[np.ndarray], arch: str) -> Any:
        made = original(parameters, arch)
        built.append(made[0])
        return made

    client.model = spy
    return built


def test_subnet_personal_head_stays_on_the_client_and_serves_its_next_subnet() -> None:
    # Prepare: two subnets of one supernet (one head shape for all), a client keeping its head
    from pfednas.clients.subnet import HEAD_KEY as PERSONAL
    from pfednas.clients.subnet import SubnetClient, build_subnet

    supernet = seeded_supernet(settings_from_cfg(compose(["method=perfedrlnas"])))
    small, large = supernet.space.min_arch(), supernet.space.max_arch()
    cut_small, cut_large = supernet.slice(small), supernet.slice(large)
    split_small = StateSplit.of(build_subnet(supernet.space, TASK, small.to_str(), cut_small))
    split_large = StateSplit.of(build_subnet(supernet.space, TASK, large.to_str(), cut_large))
    state = RecordDict()
    client = SubnetClient(ENV, supernet.space, TASK, bn_recalibrate=False, personal_head=True,
                          state=state)

    # Execute: train the small subnet, then evaluate the large one
    reply, _, _ = client.fit(cut_small, {**CONFIG, "arch": small.to_str()})
    kept = state[PERSONAL].to_numpy_ndarrays()  # type: ignore[union-attr]
    evaluated = built_models(client)
    client.evaluate(cut_large, {**CONFIG, "arch": large.to_str(), "split": "test"})

    # Assert: the reply carries the head as it came and a trained body; the trained head is
    # kept and replaces the received head of the next subnet the client runs
    assert _same(take(reply, split_small.head), take(cut_small, split_small.head))
    assert not _same(take(reply, split_small.body), take(cut_small, split_small.body))
    assert not _same(kept, take(cut_small, split_small.head))
    assert _same(take(get_arrays(evaluated[0]), split_large.head), kept)
    with pytest.raises(ValueError, match="needs the client's state"):
        SubnetClient(ENV, supernet.space, TASK, bn_recalibrate=False, personal_head=True)


@pytest.mark.parametrize("method", ["perfedrlnas", "hapfnas"])
def test_personal_head_option_reaches_the_subnet_role_with_the_node_state(method: str) -> None:
    # Prepare
    from flwr.app import Context

    from pfednas.methods import METHODS

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    on, off = (settings_from_cfg(compose([f"method={method}", f"method.personal_head={v}"]))
               for v in ("true", "false"))

    # Execute
    clients = [METHODS[method].client(s, ENV, context) for s in (on, off)]

    # Assert: the subnet role keeps its head in the node's Context.state only when asked
    roles = [c.subnet if method == "hapfnas" else c for c in clients]
    assert [r.personal_head for r in roles] == [True, False]
    assert roles[0].state is context.state


@pytest.mark.parametrize("scope", ["head", "full"])
@pytest.mark.parametrize("method", ["fedavg", "fednas"])
def test_fedavg_and_fednas_finetuning_scope_head_leaves_the_body_as_sent(
        method: str, scope: str, monkeypatch: pytest.MonkeyPatch, run_id: None) -> None:
    # Prepare: the model each method's evaluation request carries, and its client
    from pfednas.clients import common
    from pfednas.clients import fedavg as fedavg_client
    from pfednas.clients.fednas import FedNASClient
    from pfednas.strategies import FedAvgFTStrategy

    evaluated: list[torch.nn.Module] = []
    reply = common.test_reply
    monkeypatch.setattr(common, "test_reply",
                        lambda net, env, tuned, **kw: (evaluated.append(net),
                                                       reply(net, env, tuned, **kw))[1])
    if method == "fedavg":
        model_fn = fixed_model_fn(_settings("fedavg"))
        sent, extra = get_arrays(model_fn()), {}
        client: Any = fedavg_client.FedAvgClient(ENV, model_fn,
                                                  fixed_arch(_settings("fedavg")))
        strategy: Any = FedAvgFTStrategy(budget=_budget(), sgd=Sgd.read(CONFIG),
                                         initial_arrays=sent, finetune_epochs=2,
                                         finetune_scope=scope)
    else:
        mixed = DartsMixedNet(SPACE, TASK)
        arch = mixed.derive()
        sent, extra = get_arrays(mixed.extract(arch)), {"arch": arch.to_str(), "split": "test"}
        client = FedNASClient(ENV, SPACE, TASK, bn_recalibrate=False)
        strategy = FedNASStrategy(budget=_budget(), sgd=Sgd.read(CONFIG), net=mixed,
                                  options=FedNASOptions(finetune_epochs=2, finetune_scope=scope))
    strategy.node_of = {c: 100 + c for c in range(strategy.budget.num_clients)}
    request = list(strategy.record(strategy.configure_evaluate(3)))[0]
    config = dict(request.content["config"])  # type: ignore[arg-type]

    # Execute
    _, _, metrics = client.evaluate(sent, {**CONFIG, **extra, "finetune_epochs": 2,
                                           "finetune_scope": config["finetune_scope"]})

    # Assert: the strategy asks for the scope; head trains the head only (the body and its
    # BatchNorm statistics as sent), full the body too; both exactly 2 epochs
    assert config["finetune_scope"] == scope and config["finetune_epochs"] == 2
    split = StateSplit.of(evaluated[0])  # type: ignore[arg-type]
    after = get_arrays(evaluated[0])
    assert _same(take(after, split.body), take(sent, split.body)) == (scope == "head")
    assert not _same(take(after, split.head), take(sent, split.head))
    assert metrics["sample_passes"] == 2 * len(ENV.data.train.y)
    with pytest.raises(ValueError, match="finetune"):
        client.evaluate(sent, {**CONFIG, **extra, "finetune_epochs": 1, "finetune_scope": "body"})


def test_fedavg_and_fednas_finetune_scope_is_checked_before_a_run() -> None:
    from pfednas.config import ConfigError

    for method in ("fedavg", "fednas"):
        settings_from_cfg(compose([f"method={method}", "method.finetune_scope=head"]))
        with pytest.raises(ConfigError, match="finetune_scope"):
            settings_from_cfg(compose([f"method={method}", "method.finetune_scope=body"]))
