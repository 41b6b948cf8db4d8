"""`pfednas.config.compose` composes the config groups chosen once and sets the values after,
as Hydra's composition does: the config it gives is Hydra's, value for value, and a bad value
fails as Hydra fails it."""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pfednas.config import compose, conf_dir, split_overrides


def hydras(overrides: list[str]) -> str:
    """The config Hydra composes from ``overrides`` in one go, resolved, as YAML."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_yaml(cfg, resolve=True)


@pytest.mark.parametrize("overrides", [
    [],
    ["federation.lr=0.1", "seed=3"],
    # a group chosen after values of its own node: Hydra sets the values after the groups
    ["method.finetune_epochs=7", "method=fedrep", "federation=cross_silo", "federation.lr=0.2"],
    ["method=spider", "search_space.channels=4", "dataset.alpha=0.1", "eval_split=val_half"],
    ["method=hapfnas", "dataset=fashion_mnist", "method.distill.steps=3",
     "fault_injection={clients: [3], kind: raise, rounds: [3], on: [evaluate]}"],
    # a value set twice (the last wins), a key added, a forced one, a list
    ["federation.lr=0.1", "federation.lr=0.3", "+extra_key=1", "++federation.lr=0.4",
     "federation.hardware.memory_levels=[0.25,1.0]"],
])
def test_compose_gives_hydras_config(overrides: list[str]) -> None:
    # Execute
    ours = OmegaConf.to_yaml(compose(overrides), resolve=True)

    # Assert
    assert ours == hydras(overrides)


def test_groups_are_composed_and_values_set_in_their_order() -> None:
    # Execute
    groups, values = split_overrides(("federation.lr=0.1", "method=fedrep", "seed=2",
                                      "+federation=cross_silo", "hydra.job.name=x",
                                      "method/x@y=z", "~checkpoint_every"))

    # Assert
    assert groups == ("method=fedrep", "+federation=cross_silo", "hydra.job.name=x",
                      "method/x@y=z", "~checkpoint_every")
    assert values == ("federation.lr=0.1", "seed=2")


def test_a_bad_value_fails_as_in_hydras_composition_and_leaves_the_cache_as_it_was() -> None:
    # Execute / Assert
    for bad in (["federation.foo=1"], ["federation.lr=fast"], ["method=fedavg", "+seed=1"]):
        with pytest.raises(ConfigCompositionException):
            hydras(bad)
        with pytest.raises(ConfigCompositionException):
            compose(bad)
    assert OmegaConf.to_yaml(compose(["method=fedavg"]), resolve=True) == \
        hydras(["method=fedavg"])
