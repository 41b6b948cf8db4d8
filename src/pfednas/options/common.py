"""Checks shared by the method options (no torch, no Flower: the CLI's checks stay quick)."""

from __future__ import annotations

from typing import Any, TypeGuard

# the message vocabulary the options check against (re-exported)
from pfednas.wire.messages import FINETUNE_SCOPES, check_scope  # noqa: F401

# a baseline's ``arch``, besides an architecture string; fits_all: the largest architecture
# every client's memory budget admits
FITS_ALL = "fits_all"
FIXED_ARCHS = ("max", "min", FITS_ALL)


def check_int(name: str, value: Any, low: int) -> None:
    """An integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def is_arch_string(value: Any) -> TypeGuard[str]:
    """Whether ``value`` has an architecture string's form, ``<space>:<body>`` (whether it
    is one of the run's space is checked against the space: ``settings_from_cfg``)."""
    return isinstance(value, str) and ":" in value


def check_fixed_arch(value: str) -> None:
    """``max``, ``min``, ``fits_all`` or an architecture string (``<space>:<body>``)."""
    if value not in FIXED_ARCHS and not is_arch_string(value):
        raise ValueError(f"arch must be {', '.join(FIXED_ARCHS)} or an architecture string, "
                         f"got {value!r}")
