"""A client's kept models: the exact networks behind its reported figures, on disk.

At the final personalized evaluation a client hands every network it tested to a sink
(:class:`KeptModel`: the weights as numpy arrays in ``state_dict`` order, by name):
the fine-tuned one (``finetuned``, the figure reported as ``accuracy``) and the one
tested as received (``as-published``, ``accuracy_no_ft``), or only the latter for a
method that does not fine-tune. The ClientApp writes them to one folder per client::

    <dir>/client_<id>/finetuned.npz       weights, by state_dict key (no pickle)
    <dir>/client_<id>/as-published.npz
    <dir>/client_<id>/spec.json           what the model is (pfednas.edge.spec), with the
                                          sha256 of each weights file

``<dir>`` is ``<run dir>/models`` in a simulation, the node's ``model-dir`` in a
deployment. The weights say something about the client's data, so each folder is mode
0700 and each file 0600 (``<dir>`` too, where it is made here). Each file is written to
a temporary name and renamed; the spec comes last, so a folder with a spec is complete,
and a rewrite (a resumed run's final evaluation) replaces the files whole.
``pfednas export`` adds to the spec the sha256 of each file it writes (``exported``):
the record by which ``pfednas predict`` trusts a TorchScript file.

Reading trusts nothing: the folder must be a real directory inside the given root (no
symbolic links out of it), the spec valid JSON of bounded size and depth with its keys
and a task within :mod:`pfednas.limits`, each weights file its recorded hash and no more
array data than the network it claims to be (checked on the ``.npy`` headers before
anything is inflated), every array a finite float or integer array and BatchNorm
variances ≥ 0. Any problem raises :class:`KeptModelError` with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pfednas.data.npz import NpzError, read_npz_arrays
from pfednas.limits import MAX_SPEC_BYTES, task_problem

FINETUNED, AS_PUBLISHED = "finetuned", "as-published"
KINDS = (FINETUNED, AS_PUBLISHED)
SPEC_FILE = "spec.json"
SPEC_VERSION = 1
MODELS_DIR = "models"  # a simulation's kept models: <run dir>/models
EXPORTED = "exported"  # spec key: sha256 -> file, format, model of each export
PRIVATE_FILE, PRIVATE_FOLDER = 0o600, 0o700  # kept models are the client's, like its data
_FOLDER = re.compile(r"^client_(\d+)$")
# what a spec must hold for export and predict to trust it
REQUIRED_KEYS = ("version", "client_id", "method", "search_space", "task", "input",
                 "models", "reported")


class KeptModelError(Exception):
    """A kept-model folder that is missing, incomplete, damaged or crafted."""


@dataclass(frozen=True)
class KeptModel:
    """One network a client tested in its final evaluation."""

    kind: str  # FINETUNED | AS_PUBLISHED
    arch: str  # the architecture string of the space (``Arch.to_str``)
    state: dict[str, np.ndarray]  # state_dict order
    accuracy: float  # on the evaluation split, as the client measured it
    # the space ``arch`` belongs to, where it is not the run's (a width slice's scaled space)
    search_space: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


def client_folder(root: str | Path, client_id: int) -> Path:
    return Path(root) / f"client_{int(client_id)}"


def weights_file(kind: str) -> str:
    return f"{kind}.npz"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def private_folder(path: Path) -> Path:
    """``path`` made (parents too) and set to mode 0700: its owner's alone."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    path.chmod(PRIVATE_FOLDER)
    return path


def _atomic(path: Path, write: Any) -> None:
    """``write(tmp)``, then ``tmp`` (mode 0600) renamed to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.chmod(PRIVATE_FILE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez``'s format (``np.load`` reads it), with a fixed timestamp in every zip
    entry: the same arrays give the same bytes, so a resumed run's files equal an
    uninterrupted run's, hashes included."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def write_private_text(path: Path, text: str) -> None:
    """``text`` to ``path`` atomically, mode 0600."""
    _atomic(path, lambda tmp: tmp.write_text(text))


def write_kept(root: str | Path, client_id: int, models: list[KeptModel],
               spec: dict[str, Any]) -> Path:
    """Write ``models`` and ``spec`` (its ``models`` entry filled here: file, hash, accuracy
    per kind) to ``<root>/client_<id>/``, atomically file by file, the spec last."""
    if not models:
        raise ValueError("no model to keep")
    root = Path(root)
    if not root.exists():
        private_folder(root)
    folder = private_folder(client_folder(root, client_id))
    entries: dict[str, Any] = {}
    for model in models:
        path = folder / weights_file(model.kind)

        _atomic(path, lambda tmp, model=model: save_npz(tmp, model.state))
        entries[model.kind] = {"file": path.name, "sha256": sha256(path),
                               "accuracy": float(model.accuracy), "arch": model.arch}
    for kind in KINDS:  # a kind this evaluation did not produce is not left from an older one
        if kind not in entries:
            (folder / weights_file(kind)).unlink(missing_ok=True)
    full = {**spec, "models": entries}
    write_private_text(folder / SPEC_FILE,
                       json.dumps(full, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return folder


def add_to_spec(folder: Path, key: str, value: Any) -> None:
    """Set ``key`` of the spec in ``folder`` to ``value`` (a measurement), atomically."""
    path = folder / SPEC_FILE
    spec = json.loads(path.read_text())
    spec[key] = value
    write_private_text(path, json.dumps(spec, indent=2, sort_keys=True, allow_nan=False) + "\n")


def record_export(folder: Path, digest: str, entry: dict[str, Any]) -> None:
    """Record in the spec in ``folder`` that a file of sha256 ``digest`` was exported from
    it (``entry``: its name, format, model): the record ``pfednas predict`` trusts a
    TorchScript file by."""
    before = json.loads((folder / SPEC_FILE).read_text()).get(EXPORTED)
    add_to_spec(folder, EXPORTED, {**(before if isinstance(before, dict) else {}),
                                   digest: entry})


def exported_hashes(spec: dict[str, Any], fmt: str) -> set[str]:
    """The sha256 of every ``fmt`` file exported from the kept models of ``spec``."""
    exported = spec.get(EXPORTED)
    if not isinstance(exported, dict):
        return set()
    return {digest for digest, entry in exported.items()
            if isinstance(entry, dict) and entry.get("format") == fmt}


# -- reading ----------------------------------------------------------------------------------
def kept_root(path: str | Path) -> Path:
    """The folder holding ``client_<id>`` folders: ``path/models`` for a run folder, else
    ``path`` itself (a node's ``model-dir``)."""
    path = Path(path)
    if not path.is_dir():
        raise KeptModelError(f"{path} is not a directory")
    return path / MODELS_DIR if (path / MODELS_DIR).is_dir() else path


def kept_clients(root: Path) -> list[int]:
    found = (_FOLDER.match(p.name) for p in root.iterdir()) if root.is_dir() else iter(())
    return sorted(int(m.group(1)) for m in found if m)


def _inside(path: Path, root: Path) -> Path:
    """``path`` resolved, refused when it is a symbolic link or resolves outside ``root``."""
    if path.is_symlink():
        raise KeptModelError(f"{path} is a symbolic link; kept models are plain files")
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise KeptModelError(f"{path} resolves outside {root}")
    return resolved


def read_spec(path: str | Path, client_id: int) -> tuple[Path, dict[str, Any]]:
    """The folder and checked spec of client ``client_id``'s kept models under ``path`` (a
    run folder or a model dir)."""
    root = kept_root(path)
    folder = client_folder(root, client_id)
    if not folder.exists() and not folder.is_symlink():
        have = kept_clients(root)
        if not have:
            raise KeptModelError(
                f"{path} holds no kept models (a run from before models were kept, or one that "
                "stopped before its final evaluation)")
        raise KeptModelError(f"no kept model of client {client_id} in {root} (clients: "
                             f"{', '.join(map(str, have[:20]))}{' ...' if len(have) > 20 else ''})")
    return _checked_spec(root, folder, client_id)


def kept_folder_spec(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checked spec of the kept-model folder ``folder`` itself (``.../client_<id>``)."""
    folder = Path(folder)
    match = _FOLDER.match(folder.name)
    if match is None or not folder.is_dir():
        raise KeptModelError(f"{folder} is not a kept-model folder (client_<id>, with "
                             f"{SPEC_FILE})")
    return _checked_spec(folder.parent, folder, int(match.group(1)))


def _checked_spec(root: Path, folder: Path, client_id: int) -> tuple[Path, dict[str, Any]]:
    folder = _inside(folder, root)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise KeptModelError(f"{folder} has no {SPEC_FILE}: its final evaluation did not finish")
    spec_path = _inside(spec_path, folder)
    try:
        spec = load_spec_json(spec_path)
    except ValueError as err:
        raise KeptModelError(str(err)) from err
    check_spec(spec, client_id, spec_path)
    return folder, spec


def load_spec_json(path: Path) -> Any:
    """The JSON at ``path``, read as a spec: at most :data:`~pfednas.limits.MAX_SPEC_BYTES`,
    no NaN or Infinity, nesting no deeper than the parser's recursion allows; else
    ``ValueError`` with one line."""
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes, more than the "
                         f"{MAX_SPEC_BYTES:,} a spec may have")
    try:
        return json.loads(path.read_bytes(), parse_constant=_no_constant)
    except RecursionError as err:
        raise ValueError(f"{path}: not a spec (JSON nested too deep)") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(err).split())})") from err


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a spec may hold")


def check_spec(spec: Any, client_id: int, where: Path) -> None:
    if not isinstance(spec, dict):
        raise KeptModelError(f"{where}: the spec is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise KeptModelError(f"{where}: missing keys {', '.join(missing)}")
    if spec["version"] != SPEC_VERSION:
        raise KeptModelError(f"{where}: spec version {spec['version']!r}, this pfednas reads "
                             f"{SPEC_VERSION}")
    if spec["client_id"] != client_id:
        raise KeptModelError(f"{where}: the spec is client {spec['client_id']!r}'s, not "
                             f"client {client_id}'s")
    models = spec["models"]
    if not isinstance(models, dict) or not models or set(models) - set(KINDS):
        raise KeptModelError(f"{where}: 'models' must map some of {', '.join(KINDS)} to files")
    for kind, entry in models.items():
        if (not isinstance(entry, dict) or entry.get("file") != weights_file(kind)
                or not isinstance(entry.get("sha256"), str)
                or not isinstance(entry.get("arch"), str)):
            raise KeptModelError(f"{where}: models.{kind} needs file {weights_file(kind)!r}, "
                                 "sha256 and arch")
    if spec["reported"] not in models:
        raise KeptModelError(f"{where}: the reported model {spec['reported']!r} is not kept")
    if (problem := task_problem(spec["task"])) is not None:
        raise KeptModelError(f"{where}: {problem}")
    if not isinstance(spec["search_space"], dict) or "name" not in spec["search_space"]:
        raise KeptModelError(f"{where}: search_space must be an object with a name")


def read_weights(folder: Path, spec: dict[str, Any], kind: str, *,
                 budget: int) -> dict[str, np.ndarray]:
    """The weights of ``kind``, checked: its hash, at most ``budget`` bytes of arrays (the
    network's own size: checked on the file's headers before anything is inflated), plain
    numeric arrays, finite values, BatchNorm variances ≥ 0."""
    if kind not in spec["models"]:
        raise KeptModelError(f"{folder}: no {kind} model kept (kept: "
                             f"{', '.join(sorted(spec['models']))})")
    entry = spec["models"][kind]
    path = folder / entry["file"]
    if not path.is_file():
        raise KeptModelError(f"{folder}: {entry['file']} is missing")
    path = _inside(path, folder)
    if sha256(path) != entry["sha256"]:
        raise KeptModelError(f"{path}: its contents do not match the spec's sha256 (changed "
                             "or damaged after it was written)")
    try:
        state = read_npz_arrays(path, budget=budget)
    except NpzError as err:
        raise KeptModelError(str(err)) from err
    for key, array in state.items():
        if array.dtype.kind not in "fiub":
            raise KeptModelError(f"{path}: {key} has dtype {array.dtype}, not a number type")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise KeptModelError(f"{path}: {key} holds non-finite values")
        if key.endswith("running_var") and (array < 0).any():
            raise KeptModelError(f"{path}: {key} holds negative variances")
    return state


def accuracy_of(spec: dict[str, Any], kind: str) -> float:
    value = spec["models"][kind].get("accuracy")
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise KeptModelError(f"models.{kind}.accuracy is not a number")
    return float(value)


def class_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Each of the model's classes' names: the spec's ``class_names``, else (a spec from
    before they were written, a dataset without names) each class's number.

    Raises ``ValueError`` where ``class_names`` is not one string per class."""
    count = int(spec["task"]["num_classes"])
    names = spec.get("class_names")
    if names is None:
        return tuple(str(i) for i in range(count))
    if not (isinstance(names, list) and len(names) == count
            and all(isinstance(n, str) for n in names)):
        raise ValueError(f"the spec's class_names is not one name for each of its {count} "
                         "classes")
    return tuple(names)
