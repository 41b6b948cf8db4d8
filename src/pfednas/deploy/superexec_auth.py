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
secret of a running deployment.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SUPERLINK_SECRET = "superlink.secret"
SECRET_BYTES = 32


def node_secret_name(index: int) -> str:
    return f"node-{index}.secret"


def write_secret(path: Path) -> Path:
    """A new random secret at ``path`` (mode 0600, exclusive create); an existing one is kept."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new folder: owner only
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
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
