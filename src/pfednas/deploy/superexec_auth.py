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
0600 from its first byte, in a folder only its owner may write. An existing file is
kept, so a second call never changes the secret of a running deployment, but only if it
is one: a regular file (not a symbolic link, not hard-linked elsewhere) of exactly 64
hexadecimal characters (no trailing newline) with no visible pattern, that only its
owner may read, and that no other secret in the folder shares. Anything else (a weak,
short or shared file, or a folder others may write) is refused with
:class:`SecretError`, never reported as a good secret.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

SUPERLINK_SECRET = "superlink.secret"
SECRET_BYTES = 32
_SECRET = re.compile(rb"[0-9a-f]{%d}" % (2 * SECRET_BYTES))
# 64 random hexadecimal characters hold about 56 distinct pairs of neighbours, and fewer
# than 43 in none of 200,000 draws: under 32 is a pattern, not chance
MIN_DISTINCT_PAIRS = 32
SECRET_GLOB = "*.secret"


class SecretError(Exception):
    """An existing secret file that is not a secret pfednas would write."""


def node_secret_name(index: int) -> str:
    return f"node-{index}.secret"


def weakness(secret: bytes) -> str | None:
    """Why ``secret`` is not 64 random hexadecimal characters, or None."""
    if not _SECRET.fullmatch(secret):
        ending = " (it ends with a newline, which Flower reads as part of the secret)" \
            if secret.endswith(b"\n") else ""
        return f"is {len(secret)} bytes, not {2 * SECRET_BYTES} hexadecimal characters{ending}"
    pairs = len({secret[i:i + 2] for i in range(len(secret) - 1)})
    if pairs < MIN_DISTINCT_PAIRS:
        return (f"has a pattern ({pairs} distinct pairs of neighbouring characters; random "
                f"ones have over {MIN_DISTINCT_PAIRS})")
    return None


def check_folder(folder: Path) -> None:
    """Refuse a secrets folder that anyone but its owner may write (they could replace a
    secret between two calls)."""
    mode = stat.S_IMODE(os.stat(folder).st_mode)
    if mode & 0o022:
        raise SecretError(f"{folder} has mode {mode:04o}: others may replace the secrets in "
                          "it; chmod 700 it (or use a new folder)")


def check_existing(path: Path) -> None:
    """Refuse an existing ``path`` that is a link, readable by others, or a weak secret."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{path} exists and is not a regular file; remove it to write a "
                          "new secret")
    if info.st_nlink > 1:
        raise SecretError(f"{path} has {info.st_nlink} hard links: another file shares the "
                          "secret; remove it to write a new one")
    if info.st_mode & 0o077:
        raise SecretError(f"{path} exists with mode {stat.S_IMODE(info.st_mode):04o}; a "
                          "secret must be 0600 (chmod 600 it, or remove it for a new one)")
    try:
        problem = weakness(path.read_bytes())
    except OSError as err:
        raise SecretError(f"{path} exists but cannot be read ({err})") from err
    if problem is not None:
        raise SecretError(f"{path} exists but {problem}: a weak secret; remove it to write "
                          "a new one")


def check_distinct(folder: Path) -> None:
    """Refuse two secrets of ``folder`` with the same contents: each pair has its own."""
    seen: dict[bytes, Path] = {}
    for path in sorted(folder.glob(SECRET_GLOB)):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            secret = path.read_bytes()
        except OSError:
            continue  # not ours to read: not one this call wrote or kept
        if secret in seen:
            raise SecretError(f"{path} holds the same secret as {seen[secret]}: each pair "
                              "needs its own; remove one to write a new one")
        seen[secret] = path


def write_secret(path: Path) -> Path:
    """A new random secret at ``path`` (mode 0600, exclusive create); an existing one is kept."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new folder: owner only
    check_folder(path.parent)
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
    in ``start .. start+nodes-1``; no two secrets of ``out_dir`` alike."""
    names = [SUPERLINK_SECRET] if superlink else []
    names += [node_secret_name(i) for i in range(start, start + nodes)]
    paths = [write_secret(Path(out_dir) / name) for name in names]
    check_distinct(Path(out_dir))
    return paths
