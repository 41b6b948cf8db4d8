"""The method table, and how a method from outside the package joins it.

A method is one options dataclass, one strategy, one client and one row: its
:class:`~pfednas.options.facts.MethodFacts`. pfednas's own rows are in
:data:`pfednas.options.facts.FACTS` and :data:`pfednas.methods.METHODS`; a program adds one of
its own with a single :func:`register` call, which puts it in every table that names methods
(the facts, and through them the options and the report; the builders; Hydra's ``method``
config group, so that ``method=<name>`` composes, is checked and shows in ``--help``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients.common import ClientEnv
from pfednas.config import (
    RunSettings,
    method_configs,
    remove_method_configs,
    store_method_configs,
)
from pfednas.methods.fixed import StrategyBuilder
from pfednas.options import SCHEMA_SUFFIX, method_nodes
from pfednas.options.facts import FACTS, OWN_METHODS, MethodFacts, add_row, remove_row

ClientBuilder = Callable[[RunSettings, ClientEnv, Context], NumPyClient]
# a Hydra defaults-list entry: a group's choice the method selects, as its YAML would
Selection = str | Mapping[str, str]
NAME = re.compile(r"[a-z][a-z0-9_]*")  # a method's name: a config choice and a report label


@dataclass(frozen=True)
class MethodSpec:
    facts: MethodFacts  # what the code knows about it: options, spaces, how it is reported
    strategy: StrategyBuilder
    client: ClientBuilder

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def spaces(self) -> tuple[str, ...]:
        """The search spaces the method works on (empty: every one)."""
        return self.facts.spaces

    @property
    def selects_on_val(self) -> bool:
        return self.facts.selects_on_val

    @property
    def exports_from_checkpoint(self) -> bool:
        return self.facts.exports_from_checkpoint


_SPECS: dict[str, MethodSpec] = {}
# one row per row of FACTS, in its order (the report's); a read-only view of the one table
METHODS: Mapping[str, MethodSpec] = MappingProxyType(_SPECS)


def own(name: str, strategy: StrategyBuilder, client: ClientBuilder) -> None:
    """One of pfednas's own methods joined to its row of facts (``methods/__init__.py``)."""
    _SPECS[name] = MethodSpec(FACTS[name], strategy, client)


def register(*, facts: MethodFacts, strategy: StrategyBuilder, client: ClientBuilder,
             selects: Sequence[Selection] = ()) -> MethodSpec:
    """Add a method from outside the package, in every table that names methods at once.

    Parameters
    ----------
    facts
        Its row: the name (``method=<name>``), its options dataclass (frozen, every field with
        a default: the dataclass is its config, ``method.<field>=...`` on the command line),
        and how it merges, selects and is reported (:class:`MethodFacts`).
    strategy
        ``strategy(settings, budget, sgd, roster)``: its server strategy.
    client
        ``client(settings, env, context)``: its ``NumPyClient``.
    selects
        Other groups' choices it brings, as a ``conf/method/<name>.yaml`` would list them
        (``{"override /search_space@_global_.search_space": "darts_s2"}``); none by default.

    Registration is process-wide, like the tables it writes: every later composition, check,
    run and report in this process sees the method until :func:`unregister`. Only this
    process does: a run whose ClientApp runs elsewhere (``pfednas`` on Flower's runtime,
    ``run_inprocess(workers=W)``'s workers) needs the registering module imported there too.
    A duplicate name or a malformed registration raises one ``ValueError`` naming the
    problem, and changes nothing.
    """
    name = getattr(facts, "name", None)
    problem = _problem(facts, strategy, client, selects)
    if problem:
        raise ValueError(f"register(method={name!r}): {problem}")
    nodes = method_nodes(facts.name, facts.options, selects=tuple(selects))
    spec = MethodSpec(facts, strategy, client)
    store_method_configs(nodes)
    add_row(facts)
    _SPECS[facts.name] = spec
    return spec


def unregister(name: str) -> None:
    """Undo :func:`register`: ``name`` leaves every table it joined (process-wide)."""
    if name in OWN_METHODS:
        raise ValueError(f"unregister({name!r}): one of pfednas's own methods stays")
    if name not in _SPECS:
        raise ValueError(f"unregister({name!r}): no such registered method")
    remove_method_configs([name, name + SCHEMA_SUFFIX])
    remove_row(name)
    del _SPECS[name]


def _problem(facts: object, strategy: object, client: object,
             selects: Sequence[Selection]) -> str:
    """What is wrong with a registration ("" when nothing)."""
    if not isinstance(facts, MethodFacts):
        return f"facts must be a MethodFacts, got {type(facts).__name__}"
    name = facts.name
    if not isinstance(name, str) or not NAME.fullmatch(name) or name.endswith(SCHEMA_SUFFIX):
        return (f"the name must be lower-case letters, digits and _ (a letter first, not "
                f"ending {SCHEMA_SUFFIX}), got {name!r}")
    if name in FACTS or name in _SPECS or name in method_configs():
        return f"a method named {name!r} exists already"
    options = _options_problem(facts.options)
    if options:
        return f"facts.options: {options}"
    for role, builder in (("strategy", strategy), ("client", client)):
        if not callable(builder):
            return f"{role} must be a builder function, got {type(builder).__name__}"
    if isinstance(selects, str | Mapping) or not all(
            isinstance(s, str) or (isinstance(s, Mapping) and len(s) == 1) for s in selects):
        return ("selects must be a list of defaults-list entries (a name, or a one-key "
                f"mapping group: choice), got {selects!r}")
    return ""


def _options_problem(cls: object) -> str:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return f"must be a dataclass, got {cls!r}"
    if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        return f"{cls.__name__} must be frozen (@dataclass(frozen=True))"
    if any(f.name == "name" for f in dataclasses.fields(cls)):
        return f"{cls.__name__} has a field 'name', which is the method's own"
    try:
        cls()
        method_nodes("check", cls)
    except Exception as err:  # noqa: BLE001 (any failure of the defaults is the problem)
        return f"{cls.__name__}'s defaults are not a config ({type(err).__name__}: {err})"
    return ""
