"""Search spaces and supernets behind one interface (Once-for-All's verbs, typed).

``get_space(name, **cfg)`` (a run's: ``SpaceConfig.build()``) → :class:`SearchSpace` →
``sample`` / ``arch_from_str`` an :class:`Arch` → ``build_supernet(...)`` →
:class:`Supernet` with ``forward(x, arch)``, ``extract`` / ``slice`` / ``scatter`` /
``regions`` / ``cost``.  No Flower imports.
"""

from pfednas.search.arch import Arch, Cost, Dimension, Region, TaskShape, space_name_of
from pfednas.search.darts_s2 import CellMask, DartsS2Space
from pfednas.search.mobilenetv3 import MobileNetV3Space
from pfednas.search.ops import nested_slices, recalibrate_batchnorm
from pfednas.search.registry import SPACES, SpaceConfig, get_space
from pfednas.search.space import ElasticNet, SearchSpace, Supernet
from pfednas.search.vit import VitSpace

__all__ = [
    "SPACES",
    "Arch",
    "CellMask",
    "Cost",
    "DartsS2Space",
    "Dimension",
    "ElasticNet",
    "MobileNetV3Space",
    "Region",
    "SearchSpace",
    "SpaceConfig",
    "Supernet",
    "TaskShape",
    "VitSpace",
    "get_space",
    "nested_slices",
    "recalibrate_batchnorm",
    "space_name_of",
]
