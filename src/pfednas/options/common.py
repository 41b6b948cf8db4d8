"""Checks shared by the method options (no torch, no Flower: the CLI's checks stay quick)."""

from __future__ import annotations

from typing import Any

# the message vocabulary the options check against (re-exported)
from pfednas.wire.messages import FINETUNE_SCOPES, check_scope  # noqa: F401

FIXED_ARCHS = ("max", "min", "fits_all")  # a baseline's ``arch``, besides an architecture string


def check_int(name: str, value: Any, low: int) -> None:
    """An integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_fixed_arch(value: str) -> None:
    """``max``, ``min``, ``fits_all`` or an architecture string (``<space>:<body>``)."""
    if value not in FIXED_ARCHS and (not isinstance(value, str) or ":" not in value):
        raise ValueError(f"arch must be {', '.join(FIXED_ARCHS)} or an architecture string, "
                         f"got {value!r}")
