"""A search's forward-only passes, counted (``forward_macs``): the measurements a training
request makes beside training, each the cost model's forward MACs x the samples passed."""

from __future__ import annotations

import numpy as np
from flwr.app import RecordDict

from pfednas.clients import SubnetClient
from pfednas.clients.hapfnas import ARCH_SEPARATOR, HAPFNASClient
from pfednas.nas.covering import covering_arch
from pfednas.nas.phases import Phase
from pfednas.search import Supernet
from tests.test_sandwich import CONFIG, ENV, SPACE, TASK
from tests.test_sandwich import supernet as supernet  # noqa: F401 (the fixture)
from tests.test_spider import CONFIG as SPIDER_CONFIG
from tests.test_spider import global_arrays, make_client


def test_a_subnets_measurements_are_its_forward_macs_times_the_samples(
        supernet: Supernet) -> None:
    # Prepare
    arch = SPACE.sample(np.random.default_rng(5))
    client = SubnetClient(ENV, SPACE, TASK, bn_recalibrate=True)
    flops = supernet.cost(arch).flops
    n_val, n_test, n_train = (len(ENV.data.val.y), len(ENV.data.test.y),
                              len(ENV.data.train.y))

    # Execute: a training request, a search's measurement (BatchNorm re-estimated on the
    # train split, then the validation split)
    _, _, trained = client.fit(supernet.slice(arch), {**CONFIG, "arch": arch.to_str()})
    _, _, measured = client.evaluate(supernet.slice(arch),
                                     {**CONFIG, "arch": arch.to_str(), "split": "val"})

    # Assert: training reports its validation (the reward) and test passes; a measurement
    # its re-estimation and validation passes, and no training
    assert trained["forward_macs"] == flops * (n_val + n_test)
    assert measured["forward_macs"] == flops * (n_val + n_train)
    assert measured["train_macs"] == 0


def test_hapfnas_counts_every_subnet_it_measures(supernet: Supernet) -> None:
    # Prepare: three subnets sent in their covering subnet
    rng = np.random.default_rng(8)
    archs = [SPACE.sample(rng) for _ in range(3)]
    cover = covering_arch(supernet, archs)
    client = HAPFNASClient(ENV, SPACE, TASK, knowledge_width=4, bn_recalibrate=True,
                           state=RecordDict())

    # Execute
    _, _, metrics = client.evaluate(supernet.slice(cover), {
        **CONFIG, "phase": int(Phase.SEARCH), "cover": cover.to_str(), "split": "val",
        "archs": ARCH_SEPARATOR.join(a.to_str() for a in archs), "measure_on": "val"})

    # Assert: each subnet's BatchNorm re-estimation on the train split and its validation pass
    samples = len(ENV.data.train.y) + len(ENV.data.val.y)
    assert metrics["forward_macs"] == sum(supernet.cost(a).flops * samples for a in archs)


def test_spider_counts_its_perturbation_evaluations_and_ditto_has_none() -> None:
    # Execute: three rounds of SPIDER (one warm-up round, then an edge decided a round) and
    # of Ditto (no search)
    counted = {}
    for search in (True, False):
        state, params, macs = RecordDict(), global_arrays(), []
        for server_round in (1, 2, 3):
            params, _, metrics = make_client(state, search=search).fit(
                params, {**SPIDER_CONFIG, "server_round": server_round})
            macs.append(metrics["forward_macs"])
        counted[search] = macs

    # Assert: no measurement while warming up, some in every deciding round; none for Ditto
    assert counted[True][0] == 0 and all(m > 0 for m in counted[True][1:])
    assert counted[False] == [0, 0, 0]
