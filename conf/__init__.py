"""The Hydra configs, installed as ``pfednas.conf``."""

from pfednas import check_same_tree

check_same_tree(__name__, __file__)
