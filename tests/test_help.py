"""``pfednas --help`` describes every option from the code's own documentation (issue 44)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pfednas.cli import EXIT_PIPE_CLOSED
from pfednas.config import compose, conf_dir
from pfednas.config.help import field_docs, leaves, option_docs, yaml_docs
from pfednas.options import OPTIONS

COMPOSITIONS = [[f"method={m}"] for m in OPTIONS] + [
    [f"dataset={p.stem}"] for p in sorted((conf_dir() / "dataset").glob("*.yaml"))] + [
    [f"search_space={p.stem}"] for p in sorted((conf_dir() / "search_space").glob("*.yaml"))
    if p.stem != "darts_s2"] + [["method=spider"], ["federation=cross_silo"]]


@pytest.mark.parametrize("overrides", COMPOSITIONS, ids=lambda o: o[0])
def test_every_option_has_a_description(overrides: list[str]) -> None:
    # Prepare: the composed config, as the help reads it
    values = OmegaConf.to_container(compose(overrides))
    assert isinstance(values, dict)
    values.pop("hydra", None)

    # Execute
    docs = option_docs(values, conf_dir())

    # Assert: not one option without a description (per_dataset: one line for all)
    missing = [key for key, _ in leaves(values, docs)
               if key not in docs and not key.startswith("search_space.per_dataset.")]
    assert missing == []


@dataclass(frozen=True)
class _Inner:
    depth: int = 2  # how deep


@dataclass(frozen=True)
class _Base:
    # the rate,
    # in two lines
    rate: float = 0.1
    plain: int = 0


@dataclass(frozen=True)
class _Options(_Base):
    size: int = 3          # how many
    inner: _Inner = field(default_factory=_Inner)


def test_field_docs_reads_trailing_comments_the_lines_above_bases_and_nested_groups() -> None:
    assert field_docs(_Options) == {"rate": "the rate, in two lines", "size": "how many",
                                    "inner.depth": "how deep"}


def test_yaml_docs_reads_comments_beside_continued_and_above_a_key(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "group.yaml"
    path.write_text("# the file\n# and more\nname: x\nalpha: 1   # the alpha,\n"
                    "            # continued\nplain: 2\n\n# above\nnested:\n"
                    "  key: 3  # inside\n")

    # Assert
    assert yaml_docs(path) == {"name": "the file and more", "alpha": "the alpha, continued",
                               "nested": "above", "nested.key": "inside"}


def test_help_lists_the_options_of_the_chosen_method_and_no_internal_schema() -> None:
    # Execute: as a new user types it
    result = subprocess.run([sys.executable, "-m", "pfednas.cli", "method=hapfnas", "--help"],
                            capture_output=True, text=True, timeout=120)

    # Assert
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: pfednas")
    assert "method.distill.steps=100  # sandwich steps per round" in out
    assert "federation.hardware.memory_low=0.25  # training-memory budget" in out
    assert "_defaults" not in out
    groups = next(line for line in out.splitlines() if line.startswith("  method: "))
    assert groups == "  method: " + ", ".join(sorted(OPTIONS))


def test_help_with_a_bad_override_is_one_line_and_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "pfednas.cli", "method=nope", "--help"],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert result.stderr.startswith("pfednas: error: Could not find 'method/nope'")
    assert result.stdout == ""


def test_help_piped_into_a_reader_that_stops_early_ends_quietly() -> None:
    # `pfednas --help | head -1`: a traceback (BrokenPipeError) followed the first line
    proc = subprocess.Popen([sys.executable, "-m", "pfednas.cli", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    # (the usage line comes first, the options a second later: the reader has left by then)
    assert proc.wait(timeout=60) in (0, EXIT_PIPE_CLOSED) and "Traceback" not in err, err
