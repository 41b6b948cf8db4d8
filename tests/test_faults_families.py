"""Every malformed-reply kind against every strategy family, through the real ClientApp.

Per family (FedAvg-like, PerFedRLNAS, SPIDER, HAPFNAS) two tiny runs over the
same clients, in process (the ClientApp's handlers answer the strategy's
messages, an exception becomes an error reply): in one, every client but
two sends one kind of malformed training reply (:data:`MALFORMED_KINDS`,
``clients/faulty.py``); in the other, those clients raise. Both must end
without an exception and with the same server state; each malformed reply is
rejected, none is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pfednas.app.client_app import make_client
from pfednas.clients.faulty import MALFORMED_KINDS
from pfednas.config import SIMULATION_ENV, compose, settings_from_cfg
from pfednas.methods.build import build_strategy
from pfednas.records import RoundRecord
from tests.test_hapfnas import InProcessGrid


class FailingGrid(InProcessGrid):
    """:class:`InProcessGrid` where a ClientApp exception becomes an error reply, as in Flower."""

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            try:
                ids += super().push_messages([msg])
            except RuntimeError as err:
                msg.metadata.__dict__["_message_id"] = f"{len(self.replies)}-error"
                self.replies[msg.metadata.message_id] = Message(Error(code=0, reason=str(err)),
                                                                reply_to=msg)
                ids.append(msg.metadata.message_id)
        return ids

K = len(MALFORMED_KINDS) + 2  # client 0 and the last one behave
FAULTY = range(1, K - 1)
SMALL_MBV3 = ["search_space.base_widths=[8,16]", "search_space.depths=[1,2]",
              "search_space.kernels=[3,5]", "search_space.expand_ratios=[2,3]",
              "search_space.stage_strides=[1,2]", "search_space.stage_se=[false,true]",
              "search_space.stage_acts=[relu,hswish]", "search_space.head_width=32",
        "~search_space.per_dataset"]  # this tiny space as given, not sized for digits
# The default round_timeout (600 s): these grids compute every reply inside push_messages,
# so the strategy's deadline is checked only after the whole round's work; with 60 s a
# loaded machine (load ~9, SPIDER's 14 clients) turned every reply into a timeout.
COMMON = [f"federation.num_clients={K}", f"federation.clients_per_round={K}",
          "federation.local_epochs=1", "federation.min_replies=2", "federation.batch_size=16",
          "dataset.max_samples_per_client=60",
          "method.finetune_epochs=0"]  # the rounds are what these runs are about
FAMILIES: dict[str, list[str]] = {
    "fedavg": ["method=fedavg", "method.arch=min",
               "federation.num_rounds=2", "federation.eval_every=2", *SMALL_MBV3],
    "perfedrlnas": ["method=perfedrlnas", "federation.hardware.memory_budgets=false",
                    "federation.num_rounds=2", "federation.eval_every=2", *SMALL_MBV3],
    # a small DARTS space (5 edges per cell type, not 14): 2 x 14 clients x 2 rounds in seconds
    "spider": ["method=spider", "search_space=darts_s2", "search_space.channels=4",
               "search_space.layers=3", "search_space.steps=2", "search_space.multiplier=2",
               "federation.num_rounds=2", "federation.eval_every=2"],
    "hapfnas": ["method=hapfnas", "federation.num_rounds=3", "federation.eval_every=3",
                "method.distill_rounds=1", "method.search_rounds=1",
                "method.knowledge_width=4", "method.knowledge_epochs=1",
                "method.transfer.size=100", "method.distill.steps=2",
                "method.distill.batch_size=16", "method.predictor.archs_per_client=2",
                "method.predictor.trees=5", "method.predictor.folds=2",
                "method.evolution.population=4", "method.evolution.generations=2",
                "method.evolution.parents=2", *SMALL_MBV3],
}


def plan(kinds: list[str]) -> str:
    entries = ", ".join(f"{cid}: {kind}" for cid, kind in zip(FAULTY, kinds, strict=True))
    return f"fault_injection={{plan: {{{entries}}}}}"


def run(args: list[str]) -> tuple[dict[str, np.ndarray], list[RoundRecord]]:
    settings = settings_from_cfg(compose(args))
    strategy = build_strategy(settings)
    grid = FailingGrid(args, K)
    strategy.connect(grid)  # type: ignore[arg-type]
    records = strategy.run(grid, lambda r: None)  # type: ignore[arg-type]
    return strategy.state(), records


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.slow
def test_malformed_replies_are_rejected_and_change_nothing(
        family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, key, 1)
    monkeypatch.setenv(SIMULATION_ENV, "1")  # fault injection exists only in simulation
    args = [*COMMON, *FAMILIES[family]]

    malformed_state, malformed = run([*args, plan(list(MALFORMED_KINDS))])
    raising_state, raising = run([*args, plan(["raise"] * len(FAULTY))])

    train_rounds = [r for r in malformed if r.sampled]
    assert train_rounds and all(r.rejected == len(FAULTY) for r in train_rounds)
    assert all(r.failures == len(FAULTY) for r in raising if r.sampled)
    accepted = {row["client_id"] for r in train_rounds for row in r.train
                if "train_loss" in row}
    assert accepted <= {0, K - 1}
    assert list(malformed_state) == list(raising_state)
    for key, value in raising_state.items():
        np.testing.assert_array_equal(malformed_state[key], value, err_msg=key)
    assert [r.evaluation != [] for r in malformed] == [r.evaluation != [] for r in raising]


def test_fault_injection_is_refused_outside_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    args = [*COMMON, *FAMILIES["fedavg"], plan(["nan"] * len(FAULTY))]
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 1,
                                                        "num-partitions": K},
                      state=RecordDict(), run_config={"overrides": json.dumps(args)})

    with pytest.raises(RuntimeError, match="refused outside"):
        make_client(context)
