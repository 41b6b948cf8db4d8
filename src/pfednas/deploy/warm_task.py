"""A warm ClientApp task, in the forked child of its node's fork server
(:mod:`pfednas.deploy.warm`): what the shim asked for, taking it over, and ending as the
interpreter ends a console script."""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, NoReturn

from pfednas.deploy.warm_shim import STD_FDS


@dataclass(frozen=True)
class Task:
    """What a shim asked for: its arguments, environment, folder and stdio descriptors."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: tuple[int, ...]


def decode_request(body: bytes, fds: Sequence[int]) -> Task:
    """A shim's request (:func:`pfednas.deploy.warm_shim.encode_request`); ValueError if it
    is not one."""
    request = json.loads(body)
    argv, env, cwd = request.get("argv"), request.get("env"), request.get("cwd")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in env.items())):
        raise ValueError("env must map strings to strings")
    if not isinstance(cwd, str) or len(fds) != len(STD_FDS):
        raise ValueError("a request needs its folder and three descriptors")
    return Task(argv=argv, env=env, cwd=cwd, fds=tuple(fds))


def become_task(task: Task, launch_path: str | None) -> None:
    """In a forked child: take the shim's stdio, folder, environment and arguments, as the
    process the SuperExec would have started. ``sys.path[0]`` becomes the command's folder,
    as a console script has it: in place of ``launch_path``, the server's own first entry,
    or before the rest where the server started with ``-P`` (``launch_path`` None)."""
    for target, fd in zip(STD_FDS, task.fds, strict=True):
        os.dup2(fd, target)
    for fd in set(task.fds) - set(STD_FDS):
        os.close(fd)
    os.chdir(task.cwd)
    os.environ.clear()
    os.environ.update(task.env)
    sys.argv = list(task.argv)
    script_dir = os.path.dirname(os.path.realpath(task.argv[0]))
    if launch_path is None:
        sys.path.insert(0, script_dir)
    elif sys.path and sys.path[0] == launch_path:
        sys.path[0] = script_dir
    with suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=os.isatty(1))  # type: ignore[union-attr]
    if (numpy := sys.modules.get("numpy")) is not None:
        numpy.random.seed()  # a cold process draws its global NumPy state afresh


def load_entry(spec: str) -> Callable[[], Any]:
    """``module:attribute``, or the name of a console script (``flwr-clientapp``)."""
    if ":" in spec:
        module, _, attribute = spec.partition(":")
        return getattr(import_module(module), attribute)  # type: ignore[no-any-return]
    found = list(entry_points(group="console_scripts", name=spec))
    if not found:
        raise ValueError(f"no console script {spec!r} is installed")
    return found[0].load()  # type: ignore[no-any-return]


def exit_code(code: object) -> int:
    """The exit code the interpreter gives ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_task(entry: Callable[[], Any]) -> NoReturn:
    """Run ``entry`` as a console script's ``sys.exit(entry())``, and end as the interpreter
    would: an uncaught exception printed (exit code 1), an uncaught KeyboardInterrupt as
    SIGINT, non-daemon threads joined, ``atexit`` handlers run, stdio flushed. Then
    ``os._exit``, without the interpreter's teardown of every module (about 1.1 s with
    PyTorch loaded, here), as a ``multiprocessing`` fork child ends; an object that writes its
    buffer only when collected at exit would lose it (an open file not closed)."""
    code, interrupted = 1, False
    try:
        code = exit_code(entry())
    except SystemExit as stop:
        code = exit_code(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints it
        sys.excepthook(*sys.exc_info())
    finally:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):
                stream.flush()
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)
