"""The random streams' one registry (``pfednas.seeding``): purposes never share a prefix,
every seeded call in the package names its purpose from the registry, and the data streams
that met client sampling, model initialisation and the synthetic images are apart."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pfednas import seeding
from pfednas.data import ArrayDataset, ClientData, DataSpec, partition, tuning_splits
from pfednas.data.deal_cache import CACHE_ENV
from pfednas.data.registry import load_raw
from pfednas.data.synthetic import make_synthetic
from pfednas.nas.models import build_model
from pfednas.seeding import LEAVES, STREAMS
from pfednas.strategies.base import Budget
from pfednas.strategies.fedavg import FedAvgFTStrategy
from tests.conftest import SGD

REPO = Path(__file__).resolve().parents[1]
SCANNED = (REPO / "src" / "pfednas", REPO / "strategies", REPO / "clients")
SEEDED_HELPERS = frozenset({"numpy_rng", "int_seed", "torch_generator"})
RAW_NUMPY = frozenset({"SeedSequence", "default_rng"})
TAGS = {name: value for name, value in vars(seeding).items()
        if name.isupper() and type(value) is int}
# (file, enclosing function) -> why its seeded call cannot name a registered purpose.
EXCEPTIONS = {
    ("src/pfednas/report/plots.py", "client_accuracy_distribution"):
        "the horizontal jitter of plotted dots: a figure's, not a run's, randomness",
    ("clients/spider_state.py", "generator"):
        "an empty generator whose state is then restored from the client's checkpoint",
    ("strategies/perfedrlnas.py", "sample_arch"):
        "its phase argument is the sub-tag: ARCH_SEARCH or ARCH_NEW_CLIENT_SEARCH",
}


def separated(first: str, second: str) -> bool:
    """Whether no draw of ``first`` can equal a draw of ``second``.

    ``SeedSequence`` pads its entropy with zeros, so a leaf's ``[seed, *prefix]`` equals
    ``[seed, *prefix, 0]``: a purpose may extend a leaf only with a non-zero tag."""
    short, long = STREAMS[first], STREAMS[second]
    if short == long:
        return False
    if long[:len(short)] != short:
        return True
    return first in LEAVES and long[len(short)] != 0


def test_no_two_purposes_share_a_prefix() -> None:
    # Prepare: every ordered pair of registered purposes
    pairs = list(itertools.permutations(STREAMS, 2))

    # Execute
    clashes = [(a, b, STREAMS[a], STREAMS[b]) for a, b in pairs if not separated(a, b)]

    # Assert
    assert clashes == []
    assert LEAVES.issubset(STREAMS)


def test_every_tag_names_a_registered_purpose() -> None:
    # Prepare
    used = {key for prefix in STREAMS.values() for key in prefix}

    # Execute
    unused = sorted(name for name, value in TAGS.items() if value not in used)

    # Assert: no tag is left over from a stream that is gone
    assert unused == []


# -- every seeded call names its purpose ----------------------------------------------------
def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _tag_name(node: ast.expr) -> str | None:
    """``X`` or ``seeding.X`` when ``X`` is a registry tag."""
    name = (node.id if isinstance(node, ast.Name)
            else node.attr if isinstance(node, ast.Attribute) else None)
    return name if name in TAGS else None


def _seeding_imports(tree: ast.Module) -> set[str]:
    return {alias.asname or alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "pfednas.seeding"
            for alias in node.names}


def _calls_by_function(tree: ast.Module) -> Iterator[tuple[str, ast.Call]]:
    """Every call with the name of its innermost enclosing function (``<module>``)."""
    def visit(node: ast.AST, function: str) -> Iterator[tuple[str, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            inner = (child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                     else function)
            if isinstance(child, ast.Call):
                yield function, child
            yield from visit(child, inner)
    yield from visit(tree, "<module>")


def _helper_problem(call: ast.Call, imported: set[str]) -> str | None:
    """Why a ``numpy_rng`` / ``int_seed`` / ``torch_generator`` call's keys do not name a
    registered purpose (None: they do)."""
    keys = call.args[1:]
    leading: list[str] = []
    for key in keys:
        name = _tag_name(key)
        if name is None:
            break
        leading.append(name)
    if not leading:
        return "the first key after the seed is not a registry tag"
    if any(isinstance(key, ast.Name) and key.id not in imported for key in keys[:len(leading)]):
        return "a tag not imported from pfednas.seeding"
    prefix = tuple(TAGS[n] for n in leading)
    named = [name for name, registered in STREAMS.items() if registered == prefix]
    if not named:
        return f"keys {tuple(leading)} are no registered purpose"
    if named[0] in LEAVES and len(keys) > len(leading):
        return f"{named[0]} is a leaf, drawn with no further keys"
    return None


def _call_problem(call: ast.Call, imported: set[str]) -> str | None:
    name = _called_name(call)
    if name in SEEDED_HELPERS:
        return _helper_problem(call, imported)
    if name in RAW_NUMPY:
        return f"{name} outside pfednas.seeding"
    if name == "manual_seed" and not (
            len(call.args) == 1 and isinstance(call.args[0], ast.Call)
            and _called_name(call.args[0]) == "int_seed"):
        return "manual_seed of something other than an int_seed(...)"
    return None


def scan() -> tuple[list[str], set[tuple[str, str]]]:
    """Problems of the package's seeded calls, and the listed exceptions met."""
    problems: list[str] = []
    met: set[tuple[str, str]] = set()
    for path in sorted(p for root in SCANNED for p in root.rglob("*.py")):
        if path == REPO / "src" / "pfednas" / "seeding.py":
            continue
        where = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), filename=where)
        imported = _seeding_imports(tree)
        for function, call in _calls_by_function(tree):
            problem = _call_problem(call, imported)
            if problem is None:
                continue
            if (where, function) in EXCEPTIONS:
                met.add((where, function))
            else:
                problems.append(f"{where}:{call.lineno} ({function}): {problem}")
    return problems, met


def test_every_seeded_call_names_a_registered_purpose() -> None:
    # Execute
    problems, met = scan()

    # Assert: no call outside the registry, and every listed exception still needed
    assert problems == []
    assert met == set(EXCEPTIONS)


@pytest.mark.parametrize(("source", "problem"), [
    ("numpy_rng(seed, 2, r)", "the first key after the seed is not a registry tag"),
    ("numpy_rng(seed, round_, CLIENT_SAMPLING)",
     "the first key after the seed is not a registry tag"),
    ("int_seed(seed, MODEL_INIT, 3)", "model_init is a leaf, drawn with no further keys"),
    ("numpy_rng(seed, ARCH_SAMPLING, r, c)", "keys ('ARCH_SAMPLING',) are no registered purpose"),
    ("np.random.default_rng(np.random.SeedSequence([seed, 2]))", "default_rng outside"),
    ("torch.manual_seed(seed)", "manual_seed of something other than an int_seed(...)"),
    ("numpy_rng(seed, CLIENT_SAMPLING, r)", None),
])
def test_the_scan_tells_a_numbered_stream_from_a_registered_one(source: str,
                                                                problem: str | None) -> None:
    # Prepare: a call as a module of the package would write it
    call = ast.parse(source, mode="eval").body
    assert isinstance(call, ast.Call)
    imported = set(TAGS)

    # Execute
    found = _call_problem(call, imported)

    # Assert
    assert (found is None) if problem is None else (found is not None and problem in found)


# -- the old collisions are gone ----------------------------------------------------------
class EntropyLog:
    """The entropy of every ``np.random.SeedSequence`` the package builds, in order. The
    deal cache is off meanwhile: a partition read back from it draws nothing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CACHE_ENV, "off")
        self.entries: list[tuple[int, ...]] = []
        real = np.random.SeedSequence

        def record(entropy: Any = None, *args: Any, **kwargs: Any) -> np.random.SeedSequence:
            self.entries.append(tuple(int(e) for e in entropy))
            return real(entropy, *args, **kwargs)
        monkeypatch.setattr(np.random, "SeedSequence", record)

    def take(self) -> list[tuple[int, ...]]:
        entries, self.entries = self.entries, []
        return entries


def state(entropy: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(w) for w in np.random.SeedSequence(list(entropy)).generate_state(8))


SEED, CLIENTS = 20_260_131, 5


def capped_spec() -> DataSpec:
    return DataSpec("synthetic", num_clients=CLIENTS, alpha=100.0, seed=SEED,
                    max_samples_per_client=40, synthetic_samples=600)


def test_client_sampling_of_round_r_is_not_the_cap_stream_of_client_r(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: the pooled images loaded beforehand, so that partition() draws only its own
    spec = capped_spec()
    load_raw(spec.name, seed=spec.seed, synthetic_samples=spec.synthetic_samples)
    budget = Budget(num_clients=CLIENTS, clients_per_round=2, num_rounds=CLIENTS,
                    local_epochs=1, eval_every=1, round_timeout=1.0, seed=SEED)
    strategy = FedAvgFTStrategy(budget=budget, sgd=SGD, initial_arrays=[],
                                finetune_epochs=0)
    log = EntropyLog(monkeypatch)

    # Execute: the per-client caps, then each round's sampling, as the code draws them
    partition(spec)
    caps = [e for e in log.take() if len(e) == 3]
    sampling = []
    for server_round in range(CLIENTS):
        strategy.sample_clients(server_round)
        sampling.extend(log.take())

    # Assert: every client was capped (one stream each), no round's sampling is a cap
    assert [e[-1] for e in caps] == list(range(CLIENTS))
    assert len(sampling) == CLIENTS
    assert {state(e) for e in caps}.isdisjoint({state(e) for e in sampling})


def test_the_partition_is_not_drawn_from_the_model_init_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    spec = DataSpec("synthetic", num_clients=CLIENTS, alpha=100.0, seed=SEED + 1,
                    synthetic_samples=600)
    load_raw(spec.name, seed=spec.seed, synthetic_samples=spec.synthetic_samples)
    log = EntropyLog(monkeypatch)

    # Execute
    partition(spec)
    partition_draws = log.take()
    build_model(in_channels=1, image_size=8, num_classes=10, seed=spec.seed)
    model_draws = log.take()

    # Assert
    assert len(partition_draws) == 1 and len(model_draws) == 1
    assert state(partition_draws[0]) != state(model_draws[0])


def test_the_synthetic_images_are_not_client_zero_s_tuning_split(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a client whose validation split has two classes of two samples
    val = ArrayDataset(x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 0, 1, 1]))
    data = ClientData(train=val, val=val, test=val)
    log = EntropyLog(monkeypatch)

    # Execute
    make_synthetic(SEED, num_samples=20)
    images = log.take()
    tuning_splits(data, SEED, 0)
    tuning = log.take()

    # Assert: SeedSequence pads with zeros, so [seed, 4] once was [seed, 4, 0]
    assert len(images) == 1 and len(tuning) == 1
    assert state(images[0]) != state(tuning[0])
