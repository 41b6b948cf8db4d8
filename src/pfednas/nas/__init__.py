"""Pure algorithm pieces of the NAS methods (numpy / torch, no Flower)."""

from pfednas.nas.merge import Contribution, overlap_average

__all__ = ["Contribution", "overlap_average"]
