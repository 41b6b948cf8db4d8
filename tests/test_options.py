"""Every method's options have one typed source: the dataclass in pfednas.options.

The YAML files restate none of it, the README's table is rendered from it, and the
contradictions the issue found (policy optimiser, memory spread, BatchNorm re-estimation,
the merge's weighting, the fine-tuning pair) are decided once, here tested."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pfednas.app.preflight import composition_error
from pfednas.config import ConfigError, compose, conf_dir, settings_from_cfg
from pfednas.hardware.spread import HardwareSpread
from pfednas.nas.policy import PolicyOptimizer
from pfednas.options import OPTIONS, defaults, options_table, parse
from pfednas.options.baselines import LocalOptions, finetune_epochs_option, fixed_arch_option
from pfednas.options.facts import FACTS
from pfednas.options.perfedrlnas import PerFedRLNASOptions
from pfednas.report.document import render_document

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_composed_method_group_is_the_dataclass_defaults(method: str) -> None:
    # Execute
    composed = OmegaConf.to_container(compose([f"method={method}"]).method)

    # Assert
    assert composed == defaults(method)
    assert parse(method, composed) == parse(method, {})


@pytest.mark.parametrize("path", sorted((conf_dir() / "method").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_a_method_yaml_only_selects_other_groups(path: Path) -> None:
    # Prepare
    raw = OmegaConf.load(path)

    # Assert: the file names the method, extends its schema and selects another group (a
    # method that selects none has no file: its dataclass is its config), nothing else
    assert path.stem in OPTIONS
    assert set(raw) == {"defaults", "name"} and raw.name == path.stem
    assert raw.defaults[0] == f"{path.stem}_defaults" and raw.defaults[-1] == "_self_"
    selections = [d for d in raw.defaults[1:-1] if str(next(iter(d))).startswith("override /")]
    assert selections and len(selections) == len(raw.defaults) - 2


def test_readme_table_is_rendered_from_the_dataclasses() -> None:
    # Prepare
    text = README.read_text()

    # Execute
    block = text.split("<!-- options -->\n", 1)[1].split("\n<!-- /options -->", 1)[0]

    # Assert
    assert block == options_table()


def test_contradictions_are_decided_once() -> None:
    # Assert: the policy optimiser the YAML and README always said (Adam 0.5)
    assert PerFedRLNASOptions().policy == PolicyOptimizer("adam", 0.5)
    # the x4 memory spread, in one home: federation.hardware (PerFedRLNAS's, HAPFNAS's and
    # fits_all's budgets alike); no method's options restate it
    assert HardwareSpread().memory_low == 0.25
    assert settings_from_cfg(compose()).federation.hardware == HardwareSpread()
    assert all("hardware" not in defaults(m) and "budget" not in defaults(m) for m in OPTIONS)


def test_bn_recalibrate_defaults_to_true_on_the_client_too() -> None:
    # Prepare: an options mapping without the key (the old client read it as false)
    settings = settings_from_cfg(compose(["method=perfedrlnas"]))
    options = {k: v for k, v in settings.method_options.items() if k != "bn_recalibrate"}

    # Execute
    typed = parse("perfedrlnas", options)

    # Assert
    assert typed.bn_recalibrate is True


@pytest.mark.parametrize(("method", "weighting"), [
    ("perfedrlnas", "uniform"), ("hapfnas", "uniform"), ("fedavg", "samples"),
    ("fedrep", "samples")])
def test_weighting_null_is_the_methods_paper_rule(method: str, weighting: str) -> None:
    # Execute
    settings = settings_from_cfg(compose([f"method={method}"]))
    chosen = settings_from_cfg(compose([f"method={method}", "federation.weighting=samples"]))

    # Assert
    assert settings.federation.weighting == weighting
    assert chosen.federation.weighting == "samples"


def test_every_method_that_finetunes_reports_the_pair_by_default() -> None:
    # Execute
    epochs = {m: defaults(m).get("finetune_epochs") for m in OPTIONS}

    # Assert: a method fine-tunes (its row says so) exactly where its options have F, 10
    assert {m for m, f in epochs.items() if f is not None} == {m for m, f in FACTS.items()
                                                               if f.finetunes}
    assert {f for f in epochs.values() if f is not None} == {10}


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_the_typed_readers_give_what_the_composed_options_hold(method: str) -> None:
    # Prepare: the method's options as a run parses them, F set where it has one, and the
    # fixed model where it has one
    fixed = issubclass(OPTIONS[method], LocalOptions)
    values = {k: v for k, v in defaults(method).items() if k not in ("name", "search")}
    values.update({"finetune_epochs": 3} if "finetune_epochs" in values else {})
    values.update({"arch": "min"} if fixed else {})

    # Execute
    options = parse(method, values)

    # Assert: the run's builders read F and the fixed architecture from the typed options
    assert finetune_epochs_option(options) == (3 if "finetune_epochs" in values else 0)
    assert fixed_arch_option(options) == ("min" if fixed else None)


def test_every_row_of_facts_has_its_builders_in_the_same_order() -> None:
    # Execute
    from pfednas.methods import METHODS

    # Assert: the report orders its rows by METHODS; the options table by FACTS
    assert list(METHODS) == list(FACTS)
    assert all(spec.facts is FACTS[name] for name, spec in METHODS.items())


def test_the_report_writes_the_readme_options_block() -> None:
    # Prepare
    text = "before\n<!-- options -->\n| stale |\n<!-- /options -->\nafter\n"

    # Execute
    rendered = render_document(text, results_of=lambda name: pytest.fail(name))

    # Assert
    assert rendered == f"before\n<!-- options -->\n{options_table()}\n<!-- /options -->\nafter\n"


@pytest.mark.parametrize(("overrides", "expected"), [
    (["method.policy_lr=abc"], "method.policy_lr: Value 'abc'"),
    (["method=hapfnas", "method.distill.steps=x"], "method.distill.steps: Value 'x'"),
    (["method.final_arch=policy"], "unknown key method.final_arch"),
    (["method=hapfnas", "method.search_objective=params"],
     "unknown key method.search_objective"),
])
def test_a_wrong_type_or_a_removed_control_is_one_line(overrides: list[str],
                                                       expected: str) -> None:
    # Execute
    message = composition_error(overrides)

    # Assert
    assert message is not None and message.startswith(expected) and "\n" not in message


def test_ditto_cannot_be_made_to_search() -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="search is the method's"):
        settings_from_cfg(compose(["method=ditto", "method.search=true"]))
