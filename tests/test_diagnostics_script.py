"""benchmarks/bench_diagnostics.py varies options that left the methods in issue 31: on this
tree it refuses to start, in one line, before it reads or runs anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_diagnostics.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_diagnostics", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diagnostics_refuse_to_run_without_the_options_they_vary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: an empty working directory (no tuning cells to start from, nothing done)
    script = load_script()
    monkeypatch.chdir(tmp_path)

    # Execute
    with pytest.raises(SystemExit) as exit_info:
        script.main()

    # Assert: exit 2, one line naming the commit and every option gone; nothing written
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "ea544f9" in err
    for key in ("perfedrlnas: method.final_arch", "perfedrlnas: method.warmup_rounds",
                "perfedrlnas: method.warmup_arch", "perfedrlnas: method.train_scope",
                "perfedrlnas: method.merge_weighting", "hapfnas: method.search_objective",
                "hapfnas: method.train_scope", "hapfnas: method.predictor.measure"):
        assert key in err
    assert "method.exploit_rounds" not in err and "method.personal_head" not in err
    assert list(tmp_path.iterdir()) == []
