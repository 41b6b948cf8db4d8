"""A clone runs as itself (issue 64 item 6): ``pfednas`` from one tree and its
``strategies``/``clients``/``conf`` from another stop the import with one line naming both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pfednas
from pfednas import check_same_tree

CORE = Path(pfednas.__file__).resolve().parent


@pytest.mark.parametrize("package", ["strategies", "clients", "conf"])
def test_a_package_of_this_tree_or_of_the_installed_package_is_accepted(
        package: str, tmp_path: Path) -> None:
    check_same_tree(f"pfednas.{package}", str(CORE.parent.parent / package / "__init__.py"))
    check_same_tree(f"pfednas.{package}", str(CORE / package / "__init__.py"))
    with pytest.raises(ImportError, match=f"pfednas.{package} is imported from "
                                          f"{tmp_path / package} but pfednas from {CORE}"):
        check_same_tree(f"pfednas.{package}", str(tmp_path / package / "__init__.py"))


def test_another_trees_src_on_the_path_fails_at_once_naming_both(tmp_path: Path) -> None:
    # Prepare: a second tree's core (its src/pfednas) first on the path; this checkout's
    # strategies/ are what the installed package maps pfednas.strategies to
    clone = tmp_path / "clone" / "src" / "pfednas"
    shutil.copytree(CORE, clone, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(clone.parent))

    # Execute
    result = subprocess.run([sys.executable, "-c", "import pfednas.strategies"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)

    # Assert: the import fails, its last line names both trees
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pfednas.strategies is imported from")
    assert f"but pfednas from {clone}" in last
