"""Bounds on what pfednas takes from files: one place for each.

A kept model's spec, an export's spec, a user's ``.npz`` or image folder and a silo's
data are checked against these before anything is allocated from them; a file past one
of them gets one line naming the bound, never a traceback or a machine out of memory.
The bounds sit far above anything pfednas trains (CIFAR-100: 100 classes, 3 channels,
32 pixels) and far below what would exhaust a machine.
"""

from __future__ import annotations

from typing import Any

MAX_NUM_CLASSES = 10_000
MAX_IN_CHANNELS = 4
MAX_IMAGE_SIZE = 512  # pixels per side of a model's input
MAX_IMAGE_PIXELS = 1 << 25  # one image file, decoded (about 5,800 x 5,800)
MAX_DATA_BYTES = 8 << 30  # the decoded arrays of one data file or image folder
MAX_SPEC_BYTES = 1 << 20  # a spec JSON (pfednas writes a few KB)

TASK_BOUNDS = {"num_classes": MAX_NUM_CLASSES, "in_channels": MAX_IN_CHANNELS,
               "image_size": MAX_IMAGE_SIZE}


def task_problem(task: Any) -> str | None:
    """Why ``task`` (a spec's ``task``: classes, channels, side) cannot be a model's
    input and output, or None: each an integer from 1 to its bound."""
    if not isinstance(task, dict):
        return "task must be an object"
    for key, bound in TASK_BOUNDS.items():
        value = task.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            return f"task.{key} must be an integer from 1 to {bound}, got {value!r}"
    return None
