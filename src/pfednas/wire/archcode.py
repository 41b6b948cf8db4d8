"""An architecture as one integer, so it can travel as a scalar metric (MetricRecord).

Mixed radix over the space's dimensions: ``code = Σ_d index_d · Π_{e<d} |choices_e|``.
``darts_s2`` has 28 dimensions of 3 (or 4) choices: at most 4^28 = 2^56 codes,
exact in a signed 64-bit integer.
"""

from __future__ import annotations

import math

from pfednas.search import Arch, SearchSpace

MAX_CODE = 2**63 - 1


def code_capacity(space: SearchSpace) -> int:
    return math.prod(len(d.choices) for d in space.dimensions)


def arch_to_code(space: SearchSpace, arch: Arch) -> int:
    space.check(arch)
    if code_capacity(space) - 1 > MAX_CODE:
        raise ValueError(f"{space.name}: too many architectures for a 64-bit code")
    code, radix = 0, 1
    for dim, index in zip(space.dimensions, arch.indices, strict=True):
        code += index * radix
        radix *= len(dim.choices)
    return code


def arch_from_code(space: SearchSpace, code: int) -> Arch:
    if not 0 <= code < code_capacity(space):
        raise ValueError(f"{space.name}: architecture code {code} out of range")
    indices = []
    for dim in space.dimensions:
        code, index = divmod(code, len(dim.choices))
        indices.append(index)
    return space.arch_from_indices(indices)
