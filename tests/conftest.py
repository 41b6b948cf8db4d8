"""Shared test helpers: run the `pfednas` command as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pfednas.packing import array_record
from pfednas.wire.messages import Sgd
from tests.background import Scenarios

REPO = Path(__file__).resolve().parents[1]
SGD = Sgd(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=16)  # strategies built by hand
PFEDNAS = Path(sys.executable).parent / "pfednas"


TEST_RUN_VAR = "PFEDNAS_TEST_RUN"  # marks every process one test command starts
# One Ray actor per simulated test run, unless the test sizes Ray itself: two pytest workers
# share 2 cores, and a run's second actor costs about 8 CPU-seconds of start-up (its own
# torch, Flower and ClientApp) that buy nothing while the other worker is busy. Clients one
# after another give the records of clients side by side (tests/test_e2e.py keeps two).
ONE_ACTOR = "federation.ray_num_cpus=1"
SIZES_RAY = ("federation.ray_num_cpus=", "federation.ray_address=", "federation.client_cpus=")


def with_one_actor(args: list[str]) -> list[str]:
    """``args`` with :data:`ONE_ACTOR`, unless one of them sizes Ray or places the run."""
    return args if any(a.startswith(SIZES_RAY) for a in args) else [*args, ONE_ACTOR]


def run_pfednas(args: list[str], out_dir: Path, timeout: float = 600, mark: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    """`pfednas ARGS hydra.run.dir=OUT_DIR` (with :data:`ONE_ACTOR`), from the repository
    root. A command past its ``timeout`` is killed with everything it started (its SuperLink
    and Ray outlive a killed ``pfednas``), then the timeout is raised."""
    from pfednas.run.launcher import stop_processes

    mark = mark or uuid.uuid4().hex
    env = dict(os.environ, HYDRA_FULL_ERROR="0", **{TEST_RUN_VAR: mark})
    args = with_one_actor(args)
    try:
        return subprocess.run([str(PFEDNAS), *args, f"hydra.run.dir={out_dir}"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        stop_processes(mark, var=TEST_RUN_VAR)
        raise


def arrays_of(msg: Message) -> list[np.ndarray]:
    """The arrays ``msg`` carries, read as the ClientApp reads them (packed: pfednas.packing)."""
    record = array_record(msg.content)
    assert record is not None, "the message carries no arrays"
    return record.to_numpy_ndarrays()

def pids_with_token(token: str) -> list[int]:
    needle = f"PFEDNAS_RUN_TOKEN={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids



def processes_naming(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (e.g. a deployment's node folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found

@contextmanager
def flower_task_identity() -> Iterator[None]:
    """The task identity Flower sets inside a run, which building a Message needs."""
    names = ("_run_id", "_node_id", "_task_id")
    before = [getattr(TaskIdentity, n) for n in names]
    for name in names:
        setattr(TaskIdentity, name, 1)
    yield
    for name, value in zip(names, before, strict=True):
        setattr(TaskIdentity, name, value)


@pytest.fixture
def run_id() -> Iterator[None]:
    with flower_task_identity():
        yield


# Modules by how long they take on 2 cores (real runs: Flower + Ray, local deployments),
# longest first. xdist hands modules to its workers in collection order (pyproject:
# --no-loadscope-reorder), so the long ones start first and the short ones even out the
# end; a long module handed out last would leave the other worker idle. Unlisted modules
# follow in their own order, then those of LAST.
LONGEST_FIRST = ("test_deploy", "test_report", "test_devices", "test_perfedrlnas_e2e",
                 "test_deploy_profiles",
                 "test_baselines_e2e", "test_newcomer", "test_hapfnas_e2e",
                 "test_spider_e2e", "test_resume_safety", "test_ray_cluster_e2e", "test_e2e",
                 "test_kept_models", "test_faults_families", "test_protocol",
                 "test_cli_bad_input", "test_flwr_run",
                 "test_control_api_exposure")


# Modules whose tests check background scenarios (tests/background.py): last, so that their
# runs have finished by then.
LAST = ("test_warm_deploy", "test_faults_e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    rank.update({name: len(LONGEST_FIRST) + 1 + i for i, name in enumerate(LAST)})
    # stable: modules whole; unlisted modules between the longest and the last
    items.sort(key=lambda item: rank.get(item.path.stem, len(LONGEST_FIRST)))


@pytest.fixture(scope="session", autouse=True)
def scenarios(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenarios]:
    """The background scenarios of this test run (tests/background.py), started as its
    first test starts: those the selected tests check."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if hasattr(request.config, "workerinput") else base) / "scenarios"
    root.mkdir(exist_ok=True)
    runs = Scenarios(root)
    runs.start({marker.args[0] for item in request.session.items
                for marker in item.iter_markers("scenario")})
    yield runs
    runs.join()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def default_sigint() -> None:
    """``preexec_fn`` for a command the test will Ctrl-C: a shell's background job (e.g. CI
    started with ``&``) ignores SIGINT, and the ignore would be inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


MEASURED = ("wall_seconds", "server_seconds", "server_peak_memory_mb", "eval_seconds")
RUNNER = ("backend", "ran_as")  # which runner ran it and how (summary.json: ran_as)


def comparable(summary: dict) -> dict:
    """A summary without what is measured on the machine (times, memory) or names the
    runner: equal for two runs of one config, real (`pfednas`) or in-process."""
    return {k: v for k, v in summary.items() if k not in MEASURED + RUNNER}


def inprocess_summary(overrides: list[str]) -> dict:
    """The summary :func:`run_pfednas` ends with, times aside, from the in-process runner
    (the real strategy and ClientApp handlers, as a simulation): the reference an
    interrupted and resumed run must end with (its overrides name :data:`ONE_ACTOR` too)."""
    from pfednas.run.inprocess import run_inprocess

    return run_inprocess(with_one_actor(overrides)).summary


def run_and_stop_after_checkpoint(args: list[str], out_dir: Path, *, kill_server: bool,
                                  timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`pfednas ARGS`, stopped as soon as its first checkpoint is written: either its
    ServerApp process is SIGKILLed (by the PID in ``logs/serverapp.pid``; the command
    must notice and stop by itself), or Ctrl-C (SIGINT to the command's process group)."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    proc = subprocess.Popen([str(PFEDNAS), *with_one_actor(args), f"hydra.run.dir={out_dir}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + timeout
    while not (out_dir / "checkpoint.npz").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.05)
    if kill_server:
        os.kill(int((out_dir / "logs" / "serverapp.pid").read_text().split()[0]), signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


class AnsweringGrid:
    """A Grid that answers each pushed message at once with ``answer(message)`` (None: never);
    strategies' round loops run on it without Flower's runtime (messages need ``run_id``)."""

    def __init__(self, answer: Callable[[Message], RecordDict | None]) -> None:
        self.answer = answer
        self.replies: dict[str, Message] = {}
        self.pushed: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = f"m{len(self.pushed)}"
            self.pushed.append(msg)
            content = self.answer(msg)
            if content is not None:
                self.replies[msg.metadata.message_id] = Message(content, reply_to=msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]


def spread(supernet: Any, num_clients: int, *, batch_size: int = 16, seed: int = 0,
           **hardware: Any) -> dict[int, Any]:
    """A simulation's client profiles for a strategy built by hand: the seeded draw of
    ``HardwareSpread(**hardware)`` on ``supernet`` (what ``client_profiles`` gives a run)."""
    from pfednas.hardware.spread import HardwareSpread
    from pfednas.methods.fixed import spread_profiles

    return spread_profiles(supernet, HardwareSpread(**hardware), num_clients, seed, batch_size)


def measured_removed(value: object) -> object:
    """A record without what is measured rather than computed (times, memory)."""
    if isinstance(value, dict):
        return {k: measured_removed(v) for k, v in value.items()
                if not any(word in k for word in ("seconds", "memory", "wall"))}
    if isinstance(value, list):
        return [measured_removed(v) for v in value]
    return value
