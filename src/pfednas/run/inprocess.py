"""Run a whole pfednas configuration in one process, without Flower's transport or Ray.

The strategy, the ClientApp handlers and the result writers are the real ones;
only the Grid differs: :class:`InProcessGrid` calls each node's ClientApp
handler (query / train / evaluate) in this process, in order, with one
``Context`` per node that lives for the whole run (as a simulated SuperNode's
does). A seeded run therefore gives the same per-round records as
``pfednas`` (times aside), without the ~20 s start-up of a SuperLink and Ray
or the per-message overhead — for tuning sweeps, benchmarks of the maths and
tests that need many rounds. By default clients train one after another with all of this
process's torch threads; with ``workers=W`` a round's messages are handled by W worker
processes side by side (each with its share of the CPU threads, and on a GPU its own CUDA
context), each message with its node's ``Context``, which comes back with the reply. A
handler reads only its message and its context, so the records do not depend on ``W``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from omegaconf import OmegaConf

from pfednas.app import client_app
from pfednas.app.environment import environment_record
from pfednas.app.results import ResultsWriter, summarize
from pfednas.config import SIMULATION_ENV, RunSettings, compose, settings_from_cfg
from pfednas.data import partition_record
from pfednas.methods.build import build_strategy  # the server's own builder
from pfednas.records import RoundRecord

NODE_OFFSET = 100  # node id of client c: NODE_OFFSET + c


HANDLERS = {"query": client_app.query, "train": client_app.train,
            "evaluate": client_app.evaluate}


class InProcessGrid:
    """A Grid whose nodes are the real ClientApp handlers, called in this process, or with
    ``workers`` > 1 in that many worker processes, a pushed batch side by side."""

    def __init__(self, overrides: list[str], num_clients: int,
                 output_dir: Path | None = None, workers: int = 1) -> None:
        run_config: dict[str, bool | float | int | str] = {"overrides": json.dumps(list(overrides))}
        if output_dir is not None:  # where the clients keep their models, as in `pfednas`
            run_config["output-dir"] = str(output_dir)
        self.contexts = {NODE_OFFSET + c: Context(run_id=1, node_id=NODE_OFFSET + c,
                                                  node_config={"partition-id": c,
                                                               "num-partitions": num_clients},
                                                  state=RecordDict(), run_config=run_config)
                         for c in range(num_clients)}
        self.replies: dict[str, Message] = {}
        self.pushed = 0
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        batch = list(messages)
        for msg in batch:
            self.pushed += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.pushed}"
        if self.workers > 1 and len(batch) > 1:
            self._handle_side_by_side(batch)
        else:
            for msg in batch:
                node = msg.metadata.dst_node_id
                with _task_identity(node):
                    self.replies[msg.metadata.message_id] = _reply(msg, self.contexts[node])
        return [msg.metadata.message_id for msg in batch]

    def _handle_side_by_side(self, batch: list[Message]) -> None:
        """Each message and its node's context to a worker; the replies and the contexts as
        the handlers left them back, in the order pushed."""
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_start, initargs=(threads,))
        futures = []
        for msg in batch:
            node = msg.metadata.dst_node_id
            with _task_identity(node):
                payload = pickle.dumps((msg, self.contexts[node]))
            futures.append((node, self._pool.submit(_worker_reply, node, payload)))
        for node, future in futures:
            with _task_identity(node):
                reply, context = pickle.loads(future.result())
            self.contexts[node] = context
            self.replies[reply.metadata.reply_to_message_id] = reply

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]

    def close(self) -> None:
        """Stop the worker processes (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _reply(msg: Message, context: Context) -> Message:
    return HANDLERS[msg.metadata.message_type](msg, context)  # type: ignore[no-any-return]


def _worker_start(threads: int) -> None:
    """A worker's torch threads: its share of the CPU, so W workers do not oversubscribe it."""
    import torch

    torch.set_num_threads(threads)


def _worker_reply(node: int, payload: bytes) -> bytes:
    """In a worker: the node's handler on the message, with the context it came with."""
    with _task_identity(node):
        msg, context = pickle.loads(payload)
        reply = _reply(msg, context)
        return pickle.dumps((reply, context))


@contextmanager
def _task_identity(node_id: int) -> Iterator[None]:
    """What a SuperExec sets around a ClientApp call (Flower's ``Array`` records read it)."""
    names = ("_run_id", "_node_id", "_task_id")
    before = [getattr(TaskIdentity, n, None) for n in names]
    for name, value in zip(names, (1, node_id, 1), strict=True):
        setattr(TaskIdentity, name, value)
    try:
        yield
    finally:
        for name, old in zip(names, before, strict=True):
            setattr(TaskIdentity, name, old)


@dataclass(frozen=True)
class InProcessRun:
    settings: RunSettings
    records: list[RoundRecord]
    summary: dict[str, Any]


@contextmanager
def _as_simulation() -> Iterator[None]:
    """This process counts as a `pfednas` simulation (``SIMULATION_ENV``, as the launcher sets
    it for its apps) for the block: the server draws the clients' hardware and knows the
    partitions; without it the handlers would act as a deployment (each client measuring its
    speed, the server trusting the claims)."""
    before = os.environ.get(SIMULATION_ENV)
    os.environ[SIMULATION_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SIMULATION_ENV, None)
        else:
            os.environ[SIMULATION_ENV] = before


def run_inprocess(overrides: list[str], out_dir: Path | None = None,
                  workers: int = 1) -> InProcessRun:
    """Run the configuration ``overrides`` to the end, as a simulation (the records `pfednas
    OVERRIDES` gives, times aside); write results to ``out_dir`` if given. ``workers`` > 1:
    a round's clients in that many worker processes side by side (the same records)."""
    with _as_simulation():
        return _run(overrides, out_dir, workers)


def _run(overrides: list[str], out_dir: Path | None, workers: int = 1) -> InProcessRun:
    cfg = compose(overrides)
    settings = settings_from_cfg(cfg)
    start = time.perf_counter()
    writer = ResultsWriter(out_dir) if out_dir is not None else None
    if out_dir is not None:  # a run folder like the ServerApp's, for `pfednas report`
        (out_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg))
    strategy = build_strategy(settings)
    grid = InProcessGrid(list(overrides), settings.federation.num_clients, out_dir, workers)
    try:
        with _task_identity(0):
            strategy.connect(grid)  # type: ignore[arg-type]
            records = strategy.run(grid, writer.write_round if writer else (lambda r: None))  # type: ignore[arg-type]
    finally:
        grid.close()
    extra: dict[str, Any] = {"seed": settings.seed, "overrides": list(overrides),
                             "eval_split": settings.eval_split,
                             "backend": "inprocess",
                             "environment": environment_record(settings.federation.client_cpus)}
    extra.update(strategy.summary_extra(records))
    extra.update(partition_record(settings.data))
    summary = summarize(method=settings.method, dataset=settings.data.name, records=records,
                        wall_seconds=time.perf_counter() - start, extra=extra)
    if writer is not None:
        writer.write_summary(summary)
    return InProcessRun(settings=settings, records=records, summary=summary)
