"""Randomness is passed in: every generator comes from ``SeedSequence([seed, *keys])``.

This module is the one registry of the keys that name a random stream's purpose.
A draw's keys are a registered prefix (the purpose: ``STREAMS``) followed by its
variable keys (round, client, ...); hashing them through ``SeedSequence`` avoids
the collisions of ``seed + i``. Two purposes never share a prefix, so no round,
client or step number can make one purpose's draw equal another's.

``SeedSequence`` pads its entropy with zeros (``[seed, 4] == [seed, 4, 0]``), so a
purpose drawn with no keys after its prefix (``LEAVES``) may be the prefix of
another purpose only when that one continues with a non-zero tag
(``(MODEL_INIT,)`` and ``(MODEL_INIT, HAPFNAS_TRANSFER)``).

The module imports no torch at load (``torch_generator`` imports it when called),
so the data and option code can name their streams without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Purpose tags: the first key after the seed.
MODEL_INIT = 1  # a model's initial weights (leaf)
CLIENT_SAMPLING = 2  # the clients sampled for a round: (round,)
CLIENT_TRAIN = 3  # a client's batch order: (client, round, phase); phases named in clients/
ARCH_SAMPLING = 4  # PerFedRLNAS's architecture draws: a sub-tag below names which
HARDWARE = 5  # the simulated clients' hardware profiles (leaf)
SPIDER_SEARCH = 6  # a SPIDER client's search generator: (client,)
EXPORT_SAMPLE = 7  # the inputs an exported model is checked and timed on (leaf, seed 0)
SILO_SPLIT = 101  # a silo's local train / val / test split: (client,)
DATA_PARTITION = 102  # the Dirichlet partition of the pooled data over the clients (leaf)
PARTITION_CAP = 103  # a client's stratified subsample under max_samples_per_client: (client,)
CLIENT_SPLIT = 104  # a partition client's train / val / test split: (client,)
TUNING_SPLIT = 105  # a tuning run's halving of a client's validation split: (client,)
SYNTHETIC_IMAGES = 106  # the generated synthetic dataset (leaf)
PARTITION_REPAIR = 107  # the samples moved to clients a Dirichlet draw left short (leaf)
FEATURE_SKEW = 108  # each client's input transformation (feature skew), drawn for all (leaf)
FEATURE_NOISE = 109  # the pixel noise of a client's feature-skew transformation: (client,)
HAPFNAS_DISTILL = 601  # HAPFNAS's distillation inputs and subnets of a round: (round, ...)
HAPFNAS_SEARCH_ARCHS = 602  # the architectures a client measures: (client, step)
HAPFNAS_PREDICTOR = 603  # a client's accuracy predictor: (client,)
HAPFNAS_EVOLUTION = 604  # a client's evolutionary search: (client,)
HAPFNAS_TRANSFER = 605  # the server's transfer set (leaf); after MODEL_INIT: its model (leaf)

# Sub-tags: the second key, after ARCH_SAMPLING or HARDWARE.
ARCH_SEARCH = 0  # a client's policy sample in a search round: (round, client)
ARCH_NEW_CLIENT_SEARCH = 1  # a new client's policy sample in its search: (round, client)
ARCH_FALLBACK = 2  # policy samples for a final architecture over budget: (client,)
ARCH_NEW_CLIENT_RANDOM = 99  # a new client's random architecture (comparison): (client,)
FIXED_ARCH_SEARCH = 606  # after HARDWARE: the search for the largest arch all budgets fit (leaf)
HEAVY_TAILED_HARDWARE = 607  # after HARDWARE: a client's slowdown, heavy-tailed spread: (client,)
ARCH_IN_BUDGET_RANDOM = 98  # random_in_budget's subnet of a client: (client,)
LARGEST_IN_BUDGET = 608  # after HARDWARE: largest_in_budget's candidate subnets (leaf)
SANDWICH_STUDENTS = 609  # a client's in-place distillation students: (client, round)

STREAMS: Mapping[str, tuple[int, ...]] = MappingProxyType({
    "model_init": (MODEL_INIT,),
    "hapfnas_transfer_model_init": (MODEL_INIT, HAPFNAS_TRANSFER),
    "client_sampling": (CLIENT_SAMPLING,),
    "client_train": (CLIENT_TRAIN,),
    "arch_search": (ARCH_SAMPLING, ARCH_SEARCH),
    "arch_new_client_search": (ARCH_SAMPLING, ARCH_NEW_CLIENT_SEARCH),
    "arch_fallback": (ARCH_SAMPLING, ARCH_FALLBACK),
    "arch_new_client_random": (ARCH_SAMPLING, ARCH_NEW_CLIENT_RANDOM),
    "arch_in_budget_random": (ARCH_SAMPLING, ARCH_IN_BUDGET_RANDOM),
    "hardware": (HARDWARE,),
    "fixed_arch_search": (HARDWARE, FIXED_ARCH_SEARCH),
    "heavy_tailed_hardware": (HARDWARE, HEAVY_TAILED_HARDWARE),
    "largest_in_budget": (HARDWARE, LARGEST_IN_BUDGET),
    "spider_search": (SPIDER_SEARCH,),
    "export_sample": (EXPORT_SAMPLE,),
    "silo_split": (SILO_SPLIT,),
    "data_partition": (DATA_PARTITION,),
    "partition_cap": (PARTITION_CAP,),
    "client_split": (CLIENT_SPLIT,),
    "tuning_split": (TUNING_SPLIT,),
    "synthetic_images": (SYNTHETIC_IMAGES,),
    "partition_repair": (PARTITION_REPAIR,),
    "feature_skew": (FEATURE_SKEW,),
    "feature_noise": (FEATURE_NOISE,),
    "hapfnas_distill": (HAPFNAS_DISTILL,),
    "hapfnas_search_archs": (HAPFNAS_SEARCH_ARCHS,),
    "hapfnas_predictor": (HAPFNAS_PREDICTOR,),
    "hapfnas_evolution": (HAPFNAS_EVOLUTION,),
    "hapfnas_transfer": (HAPFNAS_TRANSFER,),
    "sandwich_students": (SANDWICH_STUDENTS,),
})
# The purposes drawn with no key after their prefix.
LEAVES: frozenset[str] = frozenset({
    "model_init", "hapfnas_transfer_model_init", "hardware", "fixed_arch_search",
    "data_partition", "synthetic_images", "hapfnas_transfer", "export_sample",
    "partition_repair", "feature_skew", "largest_in_budget",
})


def numpy_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def int_seed(seed: int, *keys: int) -> int:
    """A 63-bit integer seed derived from ``(seed, *keys)``."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def torch_generator(seed: int, *keys: int) -> torch.Generator:
    import torch

    gen = torch.Generator()
    gen.manual_seed(int_seed(seed, *keys))
    return gen
