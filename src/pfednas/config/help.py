"""``pfednas --help``: every option of the composed config with its value and what it does.

The descriptions are the ones the code already carries, so they cannot drift from a second
copy: an option of a typed group is described by the comment on its field in the group's
dataclass (a method's options, :mod:`pfednas.options`, nested groups such as HAPFNAS's
``distill.*`` included; :class:`pfednas.settings.Federation` with its ``hardware``;
:class:`pfednas.data.DatasetOptions`); a search space's and the top level's by the comment
beside or above the key in its YAML file. The groups' internal schemas (``*_defaults``) are
not offered as choices.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import tokenize
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

GROUPS = ("method", "dataset", "federation", "search_space")
TOP_LEVEL = "config.yaml"


def field_docs(cls: type, prefix: str = "") -> dict[str, str]:
    """Dotted field name → its comment (trailing, else the comment lines right above it) in
    the source of dataclass ``cls`` or of the dataclass it inherits the field from, nested
    dataclass fields included (``prefix.name``)."""
    out: dict[str, str] = {}
    for base in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        out.update({k: v for k, v in _own_field_docs(base, prefix).items() if v})
    return out


def _own_field_docs(cls: type, prefix: str) -> dict[str, str]:
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}  # line number → comment text
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    lines = source.splitlines()
    out: dict[str, str] = {}
    for field in dataclasses.fields(cls):
        pattern = re.compile(rf"^\s+{field.name}\s*:")
        row = next((i + 1 for i, line in enumerate(lines) if pattern.match(line)), None)
        if row is None:
            continue
        text = _comment_at(row, comments, code_lines)
        if text:
            out[prefix + field.name] = text
        nested = field.default_factory if callable(field.default_factory) else None
        if nested is not None and dataclasses.is_dataclass(nested):
            out.update(field_docs(nested, f"{prefix}{field.name}."))  # type: ignore[arg-type]
    return out


def _comment_at(row: int, comments: Mapping[int, str], code_lines: set[int]) -> str:
    """The comment on line ``row`` (trailing), else the comment-only lines above it."""
    if row in comments:
        return comments[row]
    above = []
    line = row - 1
    while line in comments and line not in code_lines:
        above.append(comments[line])
        line -= 1
    return " ".join(reversed(above))


def yaml_docs(path: Path) -> dict[str, str]:
    """Dotted key → its comment in a YAML config file: the comment beside the key, with the
    comment-only lines that continue it, else the comment block right above the key."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    block: list[str] = []  # comment lines since the last key
    last: str | None = None  # the last key, whose comment continuation lines may follow
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped:
            block, last = [], None
            continue
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if last is not None and raw.index("#") > 0:
                out[last] = f"{out.get(last, '')} {text}".strip()
            else:
                block.append(text)
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w-]*)\s*:(.*)$", raw)
        if match is None or stripped.startswith("- "):
            block, last = [], None
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), key])
        value, _, comment = rest.partition(" #")
        text = comment.strip().lstrip("#").strip() if comment else ""
        if text:
            out[dotted] = text
        elif block:
            out[dotted] = " ".join(block)
        block, last = [], dotted if text else None
        if not value.strip():
            stack.append((indent, key))
    return out


def leaves(values: Mapping[str, Any], docs: Mapping[str, str], prefix: str = ""
           ) -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) of a nested mapping, lists as values, and a mapping as one
    value where it is documented as a whole (its keys are not, e.g. ``profile_bounds``)."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        whole = dotted in docs and not any(k.startswith(dotted + ".") for k in docs)
        if isinstance(value, Mapping) and value and not whole:
            yield from leaves(value, docs, dotted + ".")
        else:
            yield dotted, value


def option_docs(config: Mapping[str, Any], conf: Path) -> dict[str, str]:
    """Every option of a composed ``config`` (as plain values) → its description; an option
    with none is absent."""
    from pfednas.data import DatasetOptions
    from pfednas.options import OPTIONS
    from pfednas.settings import Federation

    docs = {k: v for k, v in yaml_docs(conf / TOP_LEVEL).items() if "." not in k}
    docs.update({f"federation.{k}": v for k, v in field_docs(Federation).items()})
    docs.update({f"dataset.{k}": v for k, v in field_docs(DatasetOptions).items()})
    name = (config.get("search_space") or {}).get("name")
    path = conf / "search_space" / f"{name}.yaml"
    if path.is_file():
        docs.update({f"search_space.{k}": v for k, v in yaml_docs(path).items()})
    method = str((config.get("method") or {}).get("name"))
    if method in OPTIONS:
        docs.update({f"method.{k}": v for k, v in field_docs(OPTIONS[method]).items()})
        summary = " ".join((OPTIONS[method].__doc__ or "").split("\n\n")[0].split())
        docs["method.name"] = f"the algorithm (the method/ group): {summary}"
    return docs


def group_choices(conf: Path) -> dict[str, list[str]]:
    """Each config group's choices, less the internal schemas (``*_defaults``): its YAML files,
    and for ``method`` every method (most are their options dataclass alone)."""
    from pfednas.options import OPTIONS, SCHEMA_SUFFIX

    out = {group: {p.stem for p in (conf / group).glob("*.yaml")
                   if not p.stem.endswith(SCHEMA_SUFFIX)}
           for group in ("method", "dataset", "federation", "search_space", "bench")}
    out["method"] |= set(OPTIONS)
    return {group: sorted(choices) for group, choices in out.items()}


def render(overrides: list[str]) -> str:
    """The help's config part for the command line's ``overrides`` (e.g. ``method=hapfnas``
    describes HAPFNAS's options)."""
    from pfednas.config import compose, conf_dir

    conf = conf_dir()
    container = OmegaConf.to_container(compose(overrides), resolve=False)
    assert isinstance(container, dict)
    values = {str(k): v for k, v in container.items() if k != "hydra"}
    docs = option_docs(values, conf)
    lines = ["config groups (GROUP=CHOICE):"]
    lines += [f"  {group}: {', '.join(choices)}" for group, choices in group_choices(conf).items()]
    lines += ["", "options (KEY=VALUE; `pfednas method=hapfnas --help` shows HAPFNAS's), "
              "with their values now:"]
    for group in ("", *GROUPS):
        part = {k: v for k, v in values.items() if not isinstance(v, dict)} if not group \
            else {group: values.get(group, {})}
        for key, value in leaves(part, docs):
            if key.startswith("search_space.per_dataset."):
                continue  # sizing per dataset, described once below
            shown = json.dumps(value) if not isinstance(value, str) else value
            doc = docs.get(key, "")
            lines.append(f"  {key}={shown}" + (f"  # {doc}" if doc else ""))
    lines += ["  search_space.per_dataset.<dataset>.<key>=...  # "
              + docs.get("search_space.per_dataset", "the space's sizing for one dataset")]
    return "\n".join(lines)
