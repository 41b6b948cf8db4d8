"""SuperExec secrets: who may take tasks from a Runtime API.

A SuperLink's or SuperNode's Runtime API hands out the tasks of a run (the ServerApp's,
or this silo's ClientApp's: the global model in, the silo's reply out). Started with
``--superexec-auth-secret-file F`` (and ``--isolation process``), Flower 1.41 gives a
task only to an executor whose request is signed (HMAC-SHA256, timestamp and nonce)
with the same file: ``flower-superexec --superexec-auth-secret-file F``. One secret per
pair, never shared between silos:

* ``superlink.secret``: the SuperLink and its ServerApp executor (the operator's);
* ``node-<i>.secret``: SuperNode ``i`` and its ClientApp executor (silo ``i``'s own).

Each is 64 random hexadecimal characters (Flower reads the file's exact bytes), mode
0600 from its first byte; an existing file is kept, so a second call never changes the
secret of a running deployment, but only if it is one: a regular file (not a link) of 64
hexadecimal characters that only its owner may read. Anything else (a weak, short or
shared file) is refused with :class:`SecretError`, never reported as a good secret.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

SUPERLINK_SECRET = "superlink.secret"
SECRET_BYTES = 32
_SECRET = re.compile(rb"^[0-9a-f]{%d}$" % (2 * SECRET_BYTES))


class SecretError(Exception):
    """An existing secret file that is not a secret pfednas would write."""


def node_secret_name(index: int) -> str:
    return f"node-{index}.secret"


def check_existing(path: Path) -> None:
    """Refuse an existing ``path`` that is a link, readable by others, or not 64 hex chars."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{path} exists and is not a regular file; remove it to write a "
                          "new secret")
    if info.st_mode & 0o077:
        raise SecretError(f"{path} exists with mode {stat.S_IMODE(info.st_mode):04o}; a "
                          "secret must be 0600 (chmod 600 it, or remove it for a new one)")
    if not _SECRET.match(path.read_bytes()):
        raise SecretError(f"{path} exists but is not {2 * SECRET_BYTES} hexadecimal "
                          "characters (a weak secret); remove it to write a new one")


def write_secret(path: Path) -> Path:
    """A new random secret at ``path`` (mode 0600, exclusive create); an existing one is kept."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new folder: owner only
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        check_existing(path)
        return path
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_hex(SECRET_BYTES).encode("ascii"))
    os.chmod(path, 0o600)
    return path


def write_superexec_secrets(out_dir: Path, nodes: int, *, start: int = 0,
                            superlink: bool = True) -> list[Path]:
    """``superlink.secret`` (unless ``superlink=False``) and ``node-<i>.secret`` for ``i``
    in ``start .. start+nodes-1``."""
    names = [SUPERLINK_SECRET] if superlink else []
    names += [node_secret_name(i) for i in range(start, start + nodes)]
    return [write_secret(Path(out_dir) / name) for name in names]
