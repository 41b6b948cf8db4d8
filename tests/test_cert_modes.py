"""Certificates, keys and their folders get fixed modes, whatever the umask: under umask 000
plain writes would leave 0666 certificates (and 0777 folders) that anyone could replace."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfednas.deploy.certs import write_dev_certificates, write_node_keys


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(folder.iterdir())}


@pytest.mark.usefixtures("permissive_umask")
def test_certificates_are_0644_and_private_keys_0600_under_umask_000(tmp_path: Path) -> None:
    write_dev_certificates(tmp_path / "made" / "certs", nodes=2)

    assert _modes(tmp_path / "made" / "certs") == {
        "ca.crt": 0o644, "ca.key": 0o600, "server.key": 0o600, "server.pem": 0o644,
        "supernode-0.key": 0o600, "supernode-0.pem": 0o644,
        "supernode-1.key": 0o600, "supernode-1.pem": 0o644}
    assert _modes(tmp_path) == {"made": 0o755}
    assert _modes(tmp_path / "made") == {"certs": 0o755}


@pytest.mark.usefixtures("permissive_umask")
def test_node_keys_are_0600_and_public_keys_0644_under_umask_000(tmp_path: Path) -> None:
    write_node_keys(tmp_path / "keys", 2)

    assert _modes(tmp_path / "keys") == {"node-0": 0o600, "node-0.pub": 0o644,
                                         "node-1": 0o600, "node-1.pub": 0o644}
    assert _modes(tmp_path) == {"keys": 0o755}


def test_a_folder_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    folder.mkdir(mode=0o700)

    write_dev_certificates(folder)

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "ca.crt").stat().st_mode) == 0o644
