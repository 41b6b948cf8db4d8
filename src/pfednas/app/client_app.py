"""Flower ClientApp: adapts Messages to the ``NumPyClient`` of the run's method.

The client composes the same Hydra config as the server from the run-config
overrides, loads its own partition (``partition-id`` from the node config) and
answers three message types:

* ``query``: its client id, so the server can address clients by id, and in a
  deployment its hardware profile, stated in its node config or measured now
  (:mod:`pfednas.node.probe`);
* ``train``: ``NumPyClient.fit`` on the received arrays and config;
* ``evaluate``: ``NumPyClient.evaluate`` (personalized evaluation).

Around ``train`` and ``evaluate`` the client's ``Context.state`` is saved per
round and restored when empty (:mod:`pfednas.clients.state_store`), so a
resumed run or a restarted SuperNode carries on with the client's own state.

In a deployment Flower 1.41 runs every message in a fresh process; with a cache
folder in the node config (``cache-dir``) the composed config and the node's splits
are read from there after the first message (:mod:`pfednas.node.cache`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from pfednas import progress
from pfednas.app.checkpoint import CLIENT_STATE_DIR
from pfednas.clients.common import ClientEnv
from pfednas.clients.faulty import Fault, FaultyClient
from pfednas.clients.state_store import ClientStateStore
from pfednas.config import (
    RunSettings,
    in_simulation,
    overrides_from_json,
    settings_from_cfg,
    task_shape,
)
from pfednas.data import tuning_splits
from pfednas.edge.keep import keep_client_models, measure_on_node
from pfednas.edge.kept import MODELS_DIR, KeptModel, KeptModelError, add_to_spec, read_spec
from pfednas.edge.spec import KEEP_KEY
from pfednas.methods import METHODS
from pfednas.methods.fixed import with_arch
from pfednas.node.cache import composed_config, node_cache_dir
from pfednas.node.data import client_id_of, node_client_data, node_data_root
from pfednas.node.probe import no_room_beside_this_process, node_profile
from pfednas.options.baselines import fixed_arch_option
from pfednas.options.common import FITS_ALL
from pfednas.packing import array_record, pack
from pfednas.train import default_device

app = ClientApp()
# no cross-entropy of a working model comes near it; the loss of a broken one is reported as it
MAX_REPORTED_LOSS = 1e9
MODEL_DIR_KEY = "model-dir"  # node config: where the node keeps its personalized models


def node_settings(context: Context) -> RunSettings:
    """The run's settings. In a deployment a node reads no path of the run config: its
    ``dataset.root`` is its own ``data-root`` (set before any data is read, even by a
    method's config check), and ``resume`` (the server's run folder) is not checked here."""
    overrides = overrides_from_json(str(context.run_config.get("overrides", "[]")))
    cfg = composed_config(overrides, node_cache_dir(context))  # a copy, ours to change
    if not in_simulation():
        cfg.dataset.root = node_data_root(context, cfg.dataset.get("root"))
        cfg.resume = None  # the server resumes; a node restores from its checkpoint-dir
    return settings_from_cfg(cfg)


def _set_threads(settings: RunSettings) -> None:
    """One torch thread per CPU the client was given, so cores are not oversubscribed."""
    threads = max(1, int(settings.federation.client_cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def evaluation_split(settings: RunSettings) -> str:
    """What a personalized evaluation scores: ``test``; in a tuning run (``eval_split=val``)
    ``val``, or ``val-half`` for a method that selects on validation data (the half it
    never selected on, :func:`pfednas.data.tuning_splits`); with ``eval_split=val_half``
    ``val-half`` for every method, so all are scored on the same samples (a method that does
    not select on validation data leaves the other half unread)."""
    if settings.eval_split == "test":
        return "test"
    if settings.eval_split == "val_half":
        return "val-half"
    return "val-half" if METHODS[settings.method].selects_on_val else "val"


def client_env(context: Context, settings: RunSettings,
               keep: Callable[[KeptModel], None] | None = None) -> ClientEnv:
    """The client's data (its partition or silo), device and seed; ``keep``: where its
    final evaluation hands the models it tested."""
    data, client_id = node_client_data(context, settings), client_id_of(context)
    split = evaluation_split(settings)
    if split == "val-half":  # tuning: scored on validation samples never selected on
        data = tuning_splits(data, settings.seed, client_id)
    elif split == "val":
        data = dataclasses.replace(data, test=data.val)
    return ClientEnv(client_id=client_id, data=data, device=default_device(),
                     seed=settings.seed, keep=keep)


def make_client(context: Context, settings: RunSettings | None = None,
                env: ClientEnv | None = None) -> NumPyClient:
    settings = settings or node_settings(context)
    _set_threads(settings)
    env = env or client_env(context, settings)
    client = METHODS[settings.method].client(settings, env, context)
    if settings.fault_injection is not None:  # test-only
        if not in_simulation():
            raise RuntimeError("fault_injection is test-only and refused outside a "
                               "simulation")
        client = FaultyClient(client, Fault.from_config(settings.fault_injection), env.client_id)
    return client


def _config_of(msg: Message) -> dict[str, Any]:
    record = msg.content.get("config")
    return dict(record) if isinstance(record, ConfigRecord) else {}


def _arrays_of(msg: Message) -> list[np.ndarray]:
    record = array_record(msg.content)  # packed by the server (pfednas.packing)
    return record.to_numpy_ndarrays() if record is not None else []


def _scalars(metrics: dict[str, Any]) -> dict[str, int | float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


@app.query()
def query(msg: Message, context: Context) -> Message:
    cid = client_id_of(context)
    content = RecordDict({"metrics": MetricRecord({"client_id": cid})})
    # a simulation's server draws the profiles itself, as does a deployment's that gives the
    # nodes the simulation's (federation.profiles=simulated)
    if not in_simulation() and node_settings(context).federation.profiles != "simulated":
        content["profile"] = ConfigRecord(dict(profile_record(context)))
    return Message(content, reply_to=msg)


def profile_record(context: Context) -> dict[str, Any]:
    """This node's hardware profile: what its node config states, the rest measured with
    the torch threads it will train with, on the run's search space and image size."""
    settings = node_settings(context)
    _set_threads(settings)

    def supernet() -> Any:

        task = task_shape(settings)
        return settings.search_space.build().build_supernet(
            num_classes=task.num_classes, in_channels=task.in_channels,
            image_size=task.image_size)

    result = node_profile(context.node_config, build_supernet=supernet,
                          default_bandwidth_mbps=settings.federation.default_bandwidth_mbps)
    print(f"[pfednas] client {client_id_of(context)}: hardware profile {result.record} "
          f"({result.seconds:.2f} s)", flush=True)
    return result.record


def state_store(context: Context, settings: RunSettings,
                config: dict[str, Any]) -> ClientStateStore | None:
    """Where this client's state is saved: node config ``checkpoint-dir``, or in a
    simulation (checkpoints on) ``<output-dir>/client_state``; None: nowhere.

    In a deployment only the node's operator names the folder: the run config's
    ``output-dir`` is the submitter's, so a node never writes under it."""
    lineage = config.get("lineage")
    if not isinstance(lineage, str) or not lineage:
        return None
    directory = str(context.node_config.get("checkpoint-dir", "")).strip()
    if not directory and settings.checkpoint_every > 0:
        output = simulation_output(context)
        directory = "" if output is None else str(output / CLIENT_STATE_DIR)
    if not directory:
        return None
    return ClientStateStore(directory, client_id_of(context), lineage=lineage,
                            keep=max(settings.checkpoint_every, 1) + 1)


def with_fixed_arch(settings: RunSettings, config: dict[str, Any]) -> RunSettings:
    """A deployment's ``method.arch=fits_all``: the architecture the server chose from the
    clients' claimed profiles (round config ``fixed_arch``), not the simulated spread's."""
    fixed = config.get("fixed_arch")
    if not isinstance(fixed, str) or fixed_arch_option(settings.options) != FITS_ALL:
        return settings
    return with_arch(settings, fixed)


def model_dir(context: Context, settings: RunSettings) -> Path | None:
    """Where this client keeps its final models (:mod:`pfednas.edge.kept`): the node
    config's ``model-dir``, else ``<checkpoint-dir>/models``; in a simulation
    ``<output-dir>/models``; None: nowhere (the node's operator named no folder).

    In a deployment only the node's operator names the folder, as for ``checkpoint-dir``:
    the fine-tuned weights are the client's and never leave its node."""
    named = str(context.node_config.get(MODEL_DIR_KEY, "")).strip()
    if named:
        return Path(named)
    checkpoints = str(context.node_config.get("checkpoint-dir", "")).strip()
    if checkpoints:
        return Path(checkpoints) / MODELS_DIR
    output = simulation_output(context)
    return None if output is None else output / MODELS_DIR


def simulation_output(context: Context) -> Path | None:
    """In a simulation, the server's output folder on this machine: the run config's
    ``output-dir`` where it is a folder (the server made it before its first message);
    None in a deployment, or when the run named none."""
    output = str(context.run_config.get("output-dir", "")).strip()
    if not output or "partition-id" not in context.node_config or not in_simulation():
        return None
    folder = Path(output).expanduser()
    return folder if folder.is_dir() else None


def keep_models(context: Context, settings: RunSettings, config: dict[str, Any],
                kept: list[KeptModel], num_examples: int) -> None:
    """Write the models of a final evaluation (nothing to write: nothing kept); on a node,
    measure the reported one's latency and memory into its spec."""
    cid = client_id_of(context)
    root = model_dir(context, settings)
    if not kept or root is None:
        if kept and not in_simulation():  # a simulation without a run folder keeps nothing
            print(f"[pfednas] client {cid}: personalized model not kept (no {MODEL_DIR_KEY} or "
                  "checkpoint-dir in the node config)", flush=True)
        return
    overrides = overrides_from_json(str(context.run_config.get("overrides", "[]")))
    try:
        folder = keep_client_models(root, cid, kept, settings, config,
                                    split=evaluation_split(settings),
                                    num_examples=num_examples, overrides=overrides)
    except OSError as err:  # the evaluation's reply goes out all the same
        print(f"[pfednas] client {cid}: personalized model not kept in {root} ({err})",
              flush=True)
        return
    if not in_simulation():
        # the measurement runs in a second process, which imports PyTorch again: on a device
        # with no room for it, it would push the node into swapless reclaim (unresponsive)
        crowded = no_room_beside_this_process()
        if crowded:
            print(f"[pfednas] client {cid}: kept model not measured ({crowded})", flush=True)
        else:
            try:
                folder, spec = read_spec(root, cid)
                add_to_spec(folder, "measured", {"node": measure_on_node(folder, spec)})
            except (KeptModelError, RuntimeError, OSError) as err:
                print(f"[pfednas] client {cid}: could not measure the kept model ({err})",
                      flush=True)
    print(f"[pfednas] client {cid}: personalized model kept in {folder}", flush=True)


def _with_state(msg: Message, context: Context,
                handle: Callable[[NumPyClient, dict[str, Any]], RecordDict],
                *, evaluation: bool = False) -> Message:
    settings = with_fixed_arch(node_settings(context), _config_of(msg))
    config = _config_of(msg)
    server_round = int(config.get("server_round", 0))
    store = state_store(context, settings, config) if server_round > 0 else None
    if store is not None and not context.state:
        store.restore(context.state, before_round=server_round)
    kept: list[KeptModel] = []
    keep = kept.append if evaluation and config.get(KEEP_KEY) is True else None
    content = handle(make_client(context, settings, client_env(context, settings, keep)),
                     config)
    if store is not None and context.state:
        store.save(context.state, server_round)
    if kept:
        metrics = content.get("metrics")
        count = metrics.get("num_examples") if isinstance(metrics, MetricRecord) else None
        samples = int(count) if isinstance(count, int | float) else 0
        keep_models(context, settings, config, kept, samples)
    if keep is not None:  # the final evaluation: one more client for the console's bar
        progress.emit_event(progress.FINAL_EVALUATION, client_id_of(context),
                            settings.federation.num_clients)
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    def fit(client: NumPyClient, config: dict[str, Any]) -> RecordDict:
        arrays, num_examples, metrics = client.fit(_arrays_of(msg), config)
        record = MetricRecord({**_scalars(metrics), "num_examples": num_examples,
                               "client_id": client_id_of(context)})
        return pack(RecordDict({"arrays": ArrayRecord(numpy_ndarrays=arrays),
                                "metrics": record}))

    return _with_state(msg, context, fit)


def reported_loss(loss: float) -> float:
    """A test loss as the reply carries it: at most :data:`MAX_REPORTED_LOSS`, and that where
    it is not a number (a model broken before it arrived, e.g. a poisoned global model, gives
    NaN or Inf logits): the reply still counts, with its accuracy, instead of being refused."""
    return float(loss) if float(loss) <= MAX_REPORTED_LOSS else MAX_REPORTED_LOSS


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    def test(client: NumPyClient, config: dict[str, Any]) -> RecordDict:
        loss, num_examples, metrics = client.evaluate(_arrays_of(msg), config)
        record = MetricRecord({**_scalars(metrics), "loss": reported_loss(loss),
                               "num_examples": num_examples,
                               "client_id": client_id_of(context)})
        return RecordDict({"metrics": record})

    return _with_state(msg, context, test, evaluation=True)
