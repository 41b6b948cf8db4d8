"""Search spaces by name (the ``search_space/`` config group selects one)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pfednas.search.darts_s2 import DartsS2Space
from pfednas.search.mobilenetv3 import MobileNetV3Space
from pfednas.search.space import SearchSpace
from pfednas.search.vit import VitSpace

SPACES: Mapping[str, type[SearchSpace]] = MappingProxyType(
    {cls.name: cls for cls in (MobileNetV3Space, DartsS2Space, VitSpace)}
)
"""Registered spaces, read-only: name → class."""


def get_space(name: str, **cfg: Any) -> SearchSpace:
    """Build the space ``name`` from its config kwargs (e.g. ``get_space(**search_space_cfg)``)."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; known: {sorted(SPACES)}")
    return SPACES[name](**cfg)


@dataclass(frozen=True)
class SpaceConfig:
    """A search space as a run configured it: its registered ``name`` and the values its
    class is built from (the ``search_space`` group, sized for the run's dataset:
    :func:`pfednas.config.checks.space_for_dataset`). Read-only; :meth:`build` makes the
    space, :meth:`as_dict` gives the group's flat form back (``summary.json``, a kept
    model's spec)."""

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in SPACES:
            raise ValueError(f"unknown search space {self.name!r}; known: {sorted(SPACES)}")
        if "name" in self.values:
            raise ValueError("a space's values hold no 'name' (it is SpaceConfig.name)")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> SpaceConfig:
        """From the group's flat form, ``{"name": ..., **values}``."""
        values = dict(config)
        name = values.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"a search space needs a name, got {name!r}")
        return cls(name, values)

    def build(self) -> SearchSpace:
        """A new space of these values (raises ``TypeError``/``ValueError`` on bad ones)."""
        return SPACES[self.name](**self.values)

    def as_dict(self) -> dict[str, Any]:
        """The group's flat form, ``{"name": ..., **values}``."""
        return {"name": self.name, **self.values}
