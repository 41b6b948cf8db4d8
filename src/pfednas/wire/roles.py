"""What each ``state_dict`` entry of a network is, for the reply gate's checks.

The server sends arrays in ``state_dict`` order and knows the module that owns
each one; BatchNorm's buffers are statistics (a mean, a variance, a counter) and
are checked as such (:func:`pfednas.wire.validation.role_problem`), everything
else as a parameter.
"""

from __future__ import annotations

from torch import nn

from pfednas.wire.validation import BATCH_COUNT, PARAM, RUNNING_MEAN, RUNNING_VAR

BATCHNORM_BUFFERS = {"running_mean": RUNNING_MEAN, "running_var": RUNNING_VAR,
                     "num_batches_tracked": BATCH_COUNT}


def state_roles(module: nn.Module) -> list[str]:
    """The role of every ``module.state_dict()`` entry, in that order."""
    roles: dict[str, str] = {}
    for name, child in module.named_modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""
            roles.update({prefix + buffer: role for buffer, role in BATCHNORM_BUFFERS.items()})
    return [roles.get(key, PARAM) for key in module.state_dict()]
