"""``.npz`` files read against a byte budget: nothing inflated or allocated past it.

``np.load`` inflates an entry whole before anything checks it, so a 1 MB deflated entry
can take gigabytes. :func:`read_npz_arrays` opens the zip itself and, for each entry,
checks the size the zip declares and the shape x item size its ``.npy`` header declares
against what is left of the budget before it reads a byte of the data; the data is then
read into an array of exactly that size (``zipfile`` inflates no more than an entry
declares). No pickle: object arrays are refused.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import IO

import numpy as np

from pfednas.wire.validation import NPY_HEADER_MAX

CHUNK = 1 << 20


class NpzError(ValueError):
    """An ``.npz`` that cannot be read within its budget, or not at all; one line."""


def read_npz_arrays(path: str | Path, *, budget: int,
                    keys: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``path`` (those of ``keys`` where given and present), by name as
    ``np.load`` names them, at most ``budget`` bytes of array data in all."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {_key(info.filename): info for info in archive.infolist()}
            wanted = {k: v for k, v in entries.items() if keys is None or k in keys}
            declared = sum(info.file_size for info in wanted.values())
            if declared > budget + NPY_HEADER_MAX * len(wanted):
                raise NpzError(f"{path}: its arrays unpack to {declared:,} bytes, more than "
                               f"the {budget:,} allowed")
            out: dict[str, np.ndarray] = {}
            for key, info in wanted.items():
                with archive.open(info) as member:
                    out[key] = _read_entry(member, budget - sum(a.nbytes for a in out.values()),
                                           f"{path}: {key}")
            return out
    except (OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as err:
        raise NpzError(f"{path}: not a readable .npz ({' '.join(str(err).split())})") from err


def npz_keys(path: str | Path) -> list[str]:
    """The names of the arrays in ``path``, as ``np.load`` names them; nothing inflated."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [_key(name) for name in archive.namelist()]
    except (OSError, zipfile.BadZipFile) as err:
        raise NpzError(f"{path}: not a readable .npz ({' '.join(str(err).split())})") from err


def _key(name: str) -> str:
    return name[:-len(".npy")] if name.endswith(".npy") else name


def _read_entry(member: IO[bytes], budget: int, where: str) -> np.ndarray:
    shape, fortran, dtype = _header(member, where)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > budget:
        raise NpzError(f"{where}: its header declares shape {shape} of {dtype} "
                       f"({nbytes:,} bytes), more than the {max(budget, 0):,} allowed")
    array = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
    raw = array.reshape(-1).view(np.uint8)  # the array's own bytes
    done = 0
    while done < nbytes:
        chunk = member.read(min(CHUNK, nbytes - done))
        if not chunk:
            raise NpzError(f"{where}: {done:,} bytes of data for {nbytes:,} (truncated)")
        raw[done:done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        done += len(chunk)
    return array.T if fortran else array


def _header(member: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The ``.npy`` header's shape, order and dtype, refused when it is not a plain array."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(
            version)
        if read is None:
            raise NpzError(f"{where}: unsupported .npy version {version}")
        shape, fortran, dtype = read(member, max_header_size=NPY_HEADER_MAX)
    except NpzError:
        raise
    except (ValueError, SyntaxError, TypeError, EOFError) as err:
        raise NpzError(f"{where}: not a .npy array ({' '.join(str(err).split())[:200]})") \
            from err
    if dtype.hasobject:
        raise NpzError(f"{where}: an object array (pickled); only plain arrays are read")
    if any(dim < 0 for dim in shape):
        raise NpzError(f"{where}: its header declares shape {shape}")
    return tuple(shape), bool(fortran), dtype
