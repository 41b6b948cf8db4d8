"""The code a run or a cell ran: HEAD's commit and the uncommitted files of the package and
its config (:data:`SOURCE_PATHS`), as ``cell.json`` and a kept model's spec record it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SOURCE_PATHS = ("src", "strategies", "clients", "conf", "pyproject.toml")


def checkout_root() -> Path:
    """The checkout the cells run from (the folder that holds ``conf/``)."""
    return Path(str(resources.files("pfednas.conf"))).parent


@dataclass(frozen=True)
class SourceState:
    """The code cells run: HEAD's commit and the uncommitted files under SOURCE_PATHS."""

    head: str  # empty outside a git checkout
    changed: tuple[str, ...] = ()

    @property
    def commit(self) -> str:
        """As ``cell.json`` records it: ``<head>+dirty`` with uncommitted changes."""
        return self.head + ("+dirty" if self.head and self.changed else "")


def _git(root: Path, *args: str, check: bool = True) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=check, capture_output=True,
                          text=True).stdout


def changed_paths(porcelain: str) -> tuple[str, ...]:
    """The paths ``git status --porcelain=v1 -z`` lists (a rename by its new path)."""
    entries, out = iter(porcelain.split("\0")), []
    for entry in entries:
        if entry:
            out.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)  # the path it was renamed or copied from
    return tuple(out)


def source_state(root: Path | None = None) -> SourceState:
    """HEAD and the uncommitted files (untracked ones included) under :data:`SOURCE_PATHS`;
    an empty head outside a git checkout."""
    root = checkout_root() if root is None else root
    try:
        head = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--",
                      *SOURCE_PATHS)
    except (OSError, subprocess.CalledProcessError):
        return SourceState("")
    return SourceState(head, changed_paths(status))


def source_diff(root: Path | None = None) -> str:
    """The uncommitted changes under :data:`SOURCE_PATHS` as one patch against HEAD (an
    untracked file as a new one), which ``git apply`` replays on the recorded commit."""
    root = checkout_root() if root is None else root
    tracked = _git(root, "diff", "--binary", "HEAD", "--", *SOURCE_PATHS)
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--",
                     *SOURCE_PATHS).split("\0")
    return tracked + "".join(
        _git(root, "diff", "--binary", "--no-index", "--", "/dev/null", path, check=False)
        for path in untracked if path)
