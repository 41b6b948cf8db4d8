"""A mistyped name on the command line: one line naming the closest of the config's own names
("did you mean"), never the internal schemas (``*_defaults``) nor Hydra's ``+key=value``
advice, which adds a key that nothing reads (issue 63, item 10)."""

from __future__ import annotations

import pytest

from pfednas.app.preflight import composition_error


@pytest.mark.parametrize(("argv", "expected"), [
    (["method=fedavgg"], "did you mean method=fedavg?"),
    (["dataset=digit"], "did you mean dataset=digits?"),
    (["federation=crosssilo"], "did you mean federation=cross_silo?"),
    (["-m", "method=fedavg,fedavgg"], "did you mean method=fedavg?"),
])
def test_a_mistyped_choice_names_the_closest_and_hides_the_internal_schemas(
        argv: list[str], expected: str) -> None:
    # Execute
    message = composition_error(argv)

    # Assert
    assert message is not None and message.endswith(expected) and "\n" not in message
    assert "_defaults" not in message


@pytest.mark.parametrize(("argv", "expected"), [
    (["dataset.partitoner=iid"], "unknown key dataset.partitoner; did you mean "
                                 "dataset.partitioner?"),
    (["federation.hardware.memroy_low=0.5"], "unknown key federation.hardware.memroy_low; "
                                             "did you mean federation.hardware.memory_low?"),
    (["federaton.lr=0.1"], "unknown key federaton; did you mean federation?"),
    # the method's own options: those of the method the command line chose
    (["method=hapfnas", "method.distil.steps=3"], "unknown key method.distil; did you mean "
                                                  "method.distill?"),
    (["federation.foo=1"], "unknown key federation.foo: federation has no option 'foo'"),
])
def test_a_mistyped_key_names_the_closest_key_of_the_config_and_no_append(
        argv: list[str], expected: str) -> None:
    # Execute
    message = composition_error(argv)

    # Assert
    assert message is not None and message.startswith(expected), message
    assert "+" not in message and "\n" not in message


@pytest.mark.parametrize(("argv", "expected"), [
    (["+seeds=3"], "unknown key seeds; did you mean seed?"),
    (["+methd.x=1"], "unknown key methd; did you mean method?"),
    (["-m", "+seeds=1,2"], "unknown key seeds; did you mean seed?"),
])
def test_an_appended_top_level_key_nothing_reads_is_refused(argv: list[str],
                                                             expected: str) -> None:
    # Execute / Assert: Hydra composes it, and the run would go on without it
    assert composition_error(argv) == expected


def test_a_forced_known_key_still_composes() -> None:
    assert composition_error(["++seed=3"]) is None
