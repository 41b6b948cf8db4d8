"""The subnet that covers others: what HAPFNAS sends a client to measure its sampled subnets.

A client measures several sampled subnets of the distilled supernet in one search
round; only the smallest subnet containing all of them travels, never the whole
supernet unless one of them needs it. Pure (no Flower).
"""

from __future__ import annotations

import numpy as np

from pfednas.search import Arch, Supernet


def covering_arch(supernet: Supernet, archs: list[Arch]) -> Arch:
    """The smallest architecture whose subnet contains every one of ``archs``.

    Subnets are nested (prefix channels, first blocks, centre kernel crops), so with
    choices in increasing order the per-dimension largest choice covers them all;
    checked on the supernet regions, else the largest architecture (the whole supernet).
    """
    space = supernet.space
    cover = space.arch_from_indices(np.max([a.indices for a in archs], axis=0))
    outer = dict(supernet.regions(cover))
    for arch in archs:
        for i, inner in supernet.regions(arch):
            if i not in outer or not all(
                    (o.start or 0) <= (s.start or 0) and (s.stop or 0) <= (o.stop or 0)
                    for s, o in zip(inner, outer[i], strict=True)):
                return space.max_arch()
    return cover
