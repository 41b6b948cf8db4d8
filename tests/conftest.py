"""Shared test helpers: run the `pfednas` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PFEDNAS = Path(sys.executable).parent / "pfednas"


def run_pfednas(args: list[str], out_dir: Path, timeout: float = 600
                ) -> subprocess.CompletedProcess[str]:
    """`pfednas ARGS hydra.run.dir=OUT_DIR`, from the repository root."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    return subprocess.run([str(PFEDNAS), *args, f"hydra.run.dir={out_dir}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def pids_with_token(token: str) -> list[int]:
    needle = f"PFEDNAS_RUN_TOKEN={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
