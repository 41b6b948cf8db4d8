"""FedBN (+FT) through the method guide (issue 64 item 2): FedAvg's server on everything but
the BatchNorm layers, whose weights and statistics each client keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import RecordDict

from pfednas.body_head import batchnorm_positions, complement
from pfednas.config import compose, settings_from_cfg
from pfednas.methods import fixed_model_fn
from pfednas.methods.fixed import shared_arrays
from pfednas.report.cli import build_report
from pfednas.run.inprocess import NODE_OFFSET, InProcessGrid, run_inprocess
from pfednas.train import get_arrays
from pfednas.wire.messages import Sgd
from pfednas.wire.roles import state_roles

SMALL = ["federation.num_clients=3", "federation.clients_per_round=3", "federation.num_rounds=1",
         "federation.local_epochs=1", "method.finetune_epochs=0", "method.arch=min"]


def test_the_batchnorm_entries_are_every_statistic_and_affine_of_the_model_and_nothing_else(
        ) -> None:
    # Prepare
    settings = settings_from_cfg(compose(["method=fedbn", *SMALL]))
    model = fixed_model_fn(settings)()
    keys, roles = list(model.state_dict()), state_roles(model)

    # Execute
    local = batchnorm_positions(model)
    shared, shared_roles = shared_arrays(settings)

    # Assert: every statistic is local, the BatchNorm layers' weights and biases too; the
    # shared arrays are the rest, in order, with their roles
    assert local and all(i in local for i, role in enumerate(roles) if role != "param")
    assert all(keys[i].rsplit(".", 1)[0].endswith("bn") for i in local), [keys[i] for i in local]
    rest = complement(local, len(keys))
    assert len(shared) == len(rest) == len(keys) - len(local)
    assert shared_roles == [roles[i] for i in rest] and set(shared_roles) == {"param"}


def test_a_client_keeps_its_batchnorm_and_replies_with_the_rest() -> None:
    # Prepare: client 1, sent the seeded shared arrays twice
    from pfednas.app import client_app

    overrides = ["method=fedbn", *SMALL]
    settings = settings_from_cfg(compose(overrides))
    context = InProcessGrid(overrides, 3).contexts[NODE_OFFSET + 1]
    client = client_app.make_client(context, settings)
    shared, _ = shared_arrays(settings)
    initial = get_arrays(fixed_model_fn(settings)())
    local = batchnorm_positions(fixed_model_fn(settings)())
    config = {**Sgd(lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=32).to_config(),
              "local_epochs": 1, "server_round": 1}

    # Execute
    reply, samples, metrics = client.fit([a.copy() for a in shared], dict(config))
    kept = client._model([a.copy() for a in shared])  # the next round's model
    fresh = client_app.make_client(context, settings)._model([a.copy() for a in shared])

    # Assert: the reply has the shared arrays' shapes; the BatchNorm entries trained and
    # stayed (in the context's state, which a new client of the node reads back), every
    # other entry is what the server sent
    assert [a.shape for a in reply] == [a.shape for a in shared]
    assert samples > 0 and metrics["train_loss"] > 0
    assert isinstance(context.state, RecordDict)
    for model in (kept, fresh):
        arrays = get_arrays(model)
        assert any(not np.array_equal(arrays[i], initial[i]) for i in local)
        for i, sent in zip(complement(local, len(arrays)), shared, strict=True):
            assert np.array_equal(arrays[i], sent)


def test_a_fedbn_run_is_reported_as_a_fine_tuned_baseline(tmp_path: Path) -> None:
    # Execute: a run, then its report
    run_inprocess(["method=fedbn", *SMALL, "method.finetune_epochs=1"], tmp_path / "run")
    table = build_report([tmp_path / "run"], tmp_path / "report").read_text()

    # Assert: as FedAvg's, two rows: as published (each client's own BatchNorm) and
    # fine-tuned (+ft, F = 1)
    rows = {line.split("|")[1].strip(): line.split("|")[5].strip()
            for line in table.split("## Accuracy by device tier")[0].splitlines()
            if line.startswith("| fedbn")}
    assert rows == {"fedbn": "0", "fedbn+ft": "1"}
