"""Reading a pickle that may hold data only: numpy arrays, lists, dicts, str, bytes, numbers.

A pickle names the callables that rebuild its objects, and ``pickle.load`` calls whatever
it names (``os.system``, ``builtins.exec``, ...): loading a file runs the code its author
chose. :func:`load_data_pickle` resolves only the few names that rebuilding a numpy array
needs (as numpy 1.x and 2.x and Python 2's ``cPickle`` wrote them); any other name stops
the load with :class:`RefusedPickle` before anything it names is called. Containers,
strings and numbers are pickle opcodes of their own and need no name.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

import numpy as np


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something other than what rebuilding plain data needs."""


LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 writes ``bytes`` at protocols below 3: latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in LATIN1:
        raise RefusedPickle(f"_codecs.encode with {encoding!r}: only latin-1 rebuilds bytes")
    return text.encode("latin-1")


_RECONSTRUCT = np.empty(0).__reduce__()[0]          # numpy's ndarray rebuilder
_FROMBUFFER = np.empty(1).__reduce_ex__(5)[0]       # protocol 5: an array from its buffer

ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("_codecs", "encode"): _latin1_encode,
}
"""(module, name) -> the object it resolves to: everything a data pickle may name."""


class DataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED` names."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"it names {module}.{name}, which is not plain data (a pickle that names "
                "anything but numpy arrays, lists, dicts, strings and numbers could run "
                "code); nothing was executed") from None


def load_data_pickle(handle: IO[bytes], *, encoding: str = "ASCII") -> Any:
    """``pickle.load(handle, encoding=encoding)`` that resolves only :data:`ALLOWED` names.

    Raises :class:`RefusedPickle` for any other name (nothing it names is called), and
    what ``pickle.load`` raises for a corrupt stream.
    """
    return DataUnpickler(handle, encoding=encoding).load()
