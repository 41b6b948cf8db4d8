"""Search spaces by name (the ``search_space/`` config group selects one)."""

from __future__ import annotations

from collections.abc import Mapping
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
