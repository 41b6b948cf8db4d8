"""FedProx (+FT) through the method guide (issue 64 items 2 and 5): FedAvg's server, a client
whose loss adds (μ/2) ‖w − w_t‖² through the training loop's penalty hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pfednas.config import compose, settings_from_cfg
from pfednas.data import ArrayDataset
from pfednas.methods import fixed_model_fn
from pfednas.options import parse
from pfednas.report.cli import build_report
from pfednas.run.inprocess import NODE_OFFSET, run_inprocess
from pfednas.train import Hyper, get_arrays, proximal_penalty, train_epochs
from pfednas.wire.messages import Sgd

SMALL = ["federation.num_clients=3", "federation.clients_per_round=3", "federation.num_rounds=1",
         "federation.local_epochs=2", "method.finetune_epochs=0", "method.arch=min"]


def test_the_penalty_hook_adds_the_proximal_gradient_and_reports_the_cross_entropy() -> None:
    # Prepare: one linear model, one batch; the proximal term pulls towards the anchor
    torch.manual_seed(0)
    data = ArrayDataset(x=np.random.default_rng(0).normal(size=(8, 1, 2, 2)).astype(np.float32),
                        y=np.arange(8, dtype=np.int64) % 2)

    def model() -> torch.nn.Module:
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))

    def trained(mu: float) -> tuple[torch.nn.Module, float]:
        net = model()
        anchor = {n: p.detach().clone() + 1.0 for n, p in net.named_parameters()}
        params = dict(net.named_parameters())
        stats = train_epochs(net, data, epochs=1,
                             hyper=Hyper(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=8),
                             generator=torch.Generator().manual_seed(0),
                             device=torch.device("cpu"),
                             penalty=None if mu == 0 else lambda: proximal_penalty(
                                 params, anchor, mu))
        return net, stats.loss

    # Execute
    plain, plain_loss = trained(0.0)
    pulled, pulled_loss = trained(0.5)

    # Assert: one SGD step with the term moves every weight by lr·μ·(anchor − w) more,
    # the reported loss is the cross-entropy alone (the same first batch)
    for a, b in zip(plain.parameters(), pulled.parameters(), strict=True):
        torch.testing.assert_close(b - a, torch.full_like(a, 0.1 * 0.5 * 1.0))
    assert pulled_loss == plain_loss


def test_mu_must_be_a_finite_number_at_least_zero() -> None:
    assert parse("fedprox", {"mu": 0.1}).mu == 0.1
    for bad in (-0.1, float("inf"), True, "x"):
        with pytest.raises(ValueError, match="mu must be a finite number >= 0"):
            parse("fedprox", {"mu": bad})


def test_fedprox_with_mu_zero_is_fedavg_and_with_mu_it_stays_nearer_the_global_model() -> None:
    # Prepare: client 1 of one setting as FedAvg's, FedProx's with mu 0 and with mu 1, all
    # sent the same global model and round config
    from pfednas.app import client_app
    from pfednas.run.inprocess import InProcessGrid

    def client(method: str, *extra: str):  # type: ignore[no-untyped-def]
        overrides = [f"method={method}", *extra, *SMALL]
        settings = settings_from_cfg(compose(overrides))
        context = InProcessGrid(overrides, 3).contexts[NODE_OFFSET + 1]
        return client_app.make_client(context, settings), settings

    fedavg, settings = client("fedavg")
    same, _ = client("fedprox", "method.mu=0")
    prox, _ = client("fedprox", "method.mu=1.0")
    start = get_arrays(fixed_model_fn(settings)())
    config = {**Sgd(lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=32).to_config(),
              "local_epochs": 2, "server_round": 1}

    # Execute
    updates = {name: c.fit([a.copy() for a in start], dict(config))
               for name, c in (("fedavg", fedavg), ("same", same), ("prox", prox))}

    # Assert: mu 0 trains FedAvg's update bit for bit; mu 1 a shorter one, with the
    # cross-entropy reported as its loss
    def distance(arrays: list[np.ndarray]) -> float:
        return float(sum(((a - b) ** 2).sum() for a, b in zip(arrays, start, strict=True)))

    assert all(np.array_equal(a, b) for a, b in zip(updates["same"][0], updates["fedavg"][0],
                                                    strict=True))
    assert distance(updates["prox"][0]) < distance(updates["fedavg"][0])
    assert updates["prox"][2]["train_loss"] > 0


def test_a_fedprox_run_is_reported_as_a_fine_tuned_baseline(tmp_path: Path) -> None:
    # Execute: a run, then its report
    run_inprocess(["method=fedprox", *SMALL, "method.finetune_epochs=1"], tmp_path / "run")
    table = build_report([tmp_path / "run"], tmp_path / "report").read_text()

    # Assert: as FedAvg's, two rows: the global model as published and its fine-tuned
    # models (+ft, F = 1)
    rows = {line.split("|")[1].strip(): line.split("|")[5].strip()
            for line in table.split("## Accuracy by device tier")[0].splitlines()
            if line.startswith("| fedprox")}
    assert rows == {"fedprox": "0", "fedprox+ft": "1"}
