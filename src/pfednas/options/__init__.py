"""Every method's options, typed: the one source of their defaults.

Each method has one frozen dataclass here (no torch, no Flower). :func:`register_schemas`
stores each in Hydra's ConfigStore as the config ``method/<name>``, so the composed
``method`` group *is* the dataclass's defaults plus the user's overrides, typed (a wrong type
or an unknown key fails at composition). A method that selects other groups (SPIDER, Ditto
and FedNAS their search space) has a ``conf/method/<name>.yaml`` that does only that: it
extends the schema, stored as ``method/<name>_defaults``, and restates none of its options.
:func:`parse` turns the composed group into the dataclass the strategy and the clients take.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pfednas.options.facts import FACTS, OWN_METHODS
from pfednas.options.spider import DittoOptions, SpiderOptions


class _OptionsOfFacts(Mapping[str, type]):
    """Each method's options dataclass, read from its row of facts when asked (so a method
    registered later is in it too): a view, not a copy."""

    def __getitem__(self, method: str) -> type:
        return FACTS[method].options

    def __iter__(self) -> Iterator[str]:
        return iter(FACTS)

    def __len__(self) -> int:
        return len(FACTS)


# each method's options dataclass (its row of :data:`pfednas.options.facts.FACTS`)
OPTIONS: Mapping[str, type] = _OptionsOfFacts()
SCHEMA_SUFFIX = "_defaults"  # method/<name>_defaults in the ConfigStore


def parse(method: str, options: Mapping[str, Any]) -> Any:
    """The typed options of ``method`` from its composed group (``name`` ignored); raises
    ``ValueError`` / ``TypeError`` naming the bad key."""
    values = {k: v for k, v in options.items() if k != "name"}
    cls = OPTIONS[method]
    from_config = getattr(cls, "from_config", None)
    if cls in (SpiderOptions, DittoOptions):
        return SpiderOptions.from_config(values, search=method == "spider")
    if from_config is not None:
        return from_config(values)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(unknown)}")
    return cls(**values)


def schema(method: str) -> DictConfig:
    """``method``'s options as a typed, writable config with its ``name``."""
    return schema_of(OPTIONS[method], method)


def schema_of(cls: type, method: str) -> DictConfig:
    """The options dataclass ``cls`` as ``method``'s typed, writable config."""
    named = dataclasses.make_dataclass(f"{cls.__name__}Config",
                                       [("name", str, dataclasses.field(default=method))],
                                       bases=(cls,), frozen=True)
    node = OmegaConf.structured(named)
    writable(node)  # a frozen dataclass gives a read-only config: overrides must merge into it
    return node


def writable(node: DictConfig) -> DictConfig:
    """``node`` made writable, its nested groups too (a frozen dataclass's config is not)."""
    OmegaConf.set_readonly(node, False)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            writable(child)
    return node


def register_schemas(extended: Collection[str] = ()) -> None:
    """Store each of pfednas's own methods' schema in Hydra's ConfigStore (idempotent): the
    dataclass is the method's config, ``method/<name>``; a method in ``extended`` has a
    ``conf/method/<name>.yaml`` (one that selects other groups for it, e.g. SPIDER's search
    space), which extends the schema stored as ``method/<name>_defaults``. The federation's
    and the datasets' are stored beside them by :func:`pfednas.config.conf_dir`; a method
    registered from outside stores its own (:func:`pfednas.methods.register`)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for method in (m for m in OPTIONS if m in OWN_METHODS):
        nodes = method_nodes(method, OPTIONS[method], extended=method in extended)
        for name, node in nodes.items():
            store.store(group="method", name=name, node=node)


def method_nodes(method: str, cls: type, *, extended: bool = False,
                 selects: Sequence[str | Mapping[str, str]] = ()) -> dict[str, Any]:
    """``method``'s nodes in the ``method`` config group, by name: its schema (the options
    dataclass ``cls``) as ``method/<name>``; as ``method/<name>_defaults`` where a YAML of its
    own extends it (``extended``) or where it ``selects`` other groups' choices (Hydra
    defaults-list entries, ``{"override /search_space@_global_.search_space": "darts_s2"}``),
    then with ``method/<name>`` the node a YAML would be: those entries over the schema."""
    node = schema_of(cls, method)
    if not extended and not selects:
        return {method: node}
    base = method + SCHEMA_SUFFIX
    if not selects:
        return {base: node}
    return {base: node, method: {"defaults": [base, *selects, "_self_"], "name": method}}


def defaults(method: str) -> dict[str, Any]:
    """``method``'s default options as plain values (what its YAML must not restate); a copy
    of those its options class gives, built once (a results page asks for them per cell)."""
    return copy.deepcopy(_defaults_of(OPTIONS[method], method))


@cache
def _defaults_of(cls: type, method: str) -> dict[str, Any]:
    value = OmegaConf.to_container(schema_of(cls, method))
    assert isinstance(value, dict)
    return {str(k): v for k, v in value.items()}


def check_method(method: Any, options: Mapping[str, Any], federation: Any, space: str) -> Any:
    """Known method, its options typed and consistent with the federation (``num_clients``,
    ``clients_per_round``, ``num_rounds``) and the search space; the typed options, or
    ``ValueError`` with one line naming the key."""
    if method not in OPTIONS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(OPTIONS)}")
    spaces = FACTS[method].spaces
    if spaces and space not in spaces and FACTS[method].slices_width:
        raise ValueError(f"method={method} slices the width of one global model: it supports "
                         f"search_space={'|'.join(spaces)} (the spaces it can width-scale), "
                         f"got search_space={space}")
    if spaces and space not in spaces:
        raise ValueError(f"method={method} needs search_space={'|'.join(spaces)}, got "
                         f"search_space={space} (method={method} selects its space by itself: "
                         "leave search_space= out)")
    try:
        typed = parse(method, options)
        check = getattr(typed, "check_federation", None)
        if check is not None:
            check(federation)
    except (TypeError, ValueError) as err:
        raise ValueError(f"method ({method}): {err}") from err
    if getattr(typed, "sandwich_students", 0) and not _nests_by_index(space):
        raise ValueError(f"method.sandwich_students trains subnets nested in the client's: "
                         f"search_space={space} does not nest its subnets by index "
                         "(search_space=mobilenetv3 does)")
    return typed


def _nests_by_index(space: str) -> bool:
    from pfednas.search import SPACES as SPACE_CLASSES  # torch, only when asked

    return bool(getattr(SPACE_CLASSES.get(space), "nests_by_index", False))


def check_method_data(typed: Any, spec: Any) -> None:
    """What a method needs of the data (e.g. HAPFNAS's unheld samples), before anything runs."""
    check = getattr(typed, "check_data", None)
    if check is not None:
        check(spec)


def options_table() -> str:
    """The README's table of every method's options and defaults (nested groups named by
    their keys), rendered from the dataclasses: the README cannot disagree with the code."""
    rows = ["| method | options (default) |", "|---|---|"]
    for method in OPTIONS:
        values = {k: v for k, v in defaults(method).items() if k not in ("name", "search")}
        cells = [f"`{key}` ({_short(value)})" if not isinstance(value, dict)
                 else f"`{key}.*` ({', '.join(value)})" for key, value in values.items()]
        rows.append(f"| `{method}` | {', '.join(cells) or '—'} |")
    return "\n".join(rows)


def _short(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
