"""What a command checks before it starts anything, beyond the typed settings.

* :func:`composition_error`: Hydra composes the config of every job the command line
  asks for (an unknown key, a config group option that does not exist, a malformed
  override), and its error becomes one line instead of Hydra's multi-line report.
* :func:`check_runnable`: the method's strategy builds from the settings (e.g. HAPFNAS's
  client budgets fit its smallest subnet), and a ``resume=`` run's checkpoint and history
  fit that strategy (:func:`pfednas.app.checkpoint.verified_resume`).

Both raise or return :class:`~pfednas.config.ConfigError` messages of one line; the
commands print them and exit with code 2.
"""

from __future__ import annotations

import contextlib
import difflib
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from pfednas.config import ConfigError, RunSettings, compose

HYDRA_RUN_FLAGS = ("-m", "--multirun")  # the only flags after which a run still composes


def one_line(text: str) -> str:
    """A message's first paragraph, its lines joined."""
    paragraph = text.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines() if line.strip())


# keys that moved or left (issue 44): a newcomer's old command line says where they went
MOVED_KEYS = {
    "method.hardware": "the clients' hardware is federation.hardware.*, shared by every method",
    "method.budget": "HAPFNAS's budgets are method.budget_metric on federation.hardware.*",
    "method.budget_reward": "removed: it lost on validation (docs/TUNING.md)",
    "method.personal_bn": "removed: it lost on validation (docs/TUNING.md)",
}


def hydra_message(err: Exception, overrides: Sequence[str] = ()) -> str:
    """Hydra's composition error in one line, naming the key or the config group, and the
    closest of the config's own names (``overrides``: the command line that failed)."""
    from hydra.errors import MissingConfigException

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, name = err.missing_cfg_file.rpartition("/")
        choices = public_choices(group, err.options)
        return (f"Could not find '{err.missing_cfg_file}': config group {group} has "
                f"{', '.join(choices)}{did_you_mean(name, choices, prefix=f'{group}=')}")
    cause = err.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        moved = next((why for old, why in MOVED_KEYS.items()
                      if cause.full_key == old or cause.full_key.startswith(old + ".")), None)
        if moved is not None:
            return f"unknown key {cause.full_key} ({moved})"
        return f"unknown key {cause.full_key}{key_suggestion(cause.full_key, overrides)}"
    if isinstance(cause, ValidationError) and cause.full_key:  # a typed option's value
        reason = str(cause.msg if hasattr(cause, "msg") else cause).strip().splitlines()[0]
        return f"{cause.full_key}: {reason}"
    return one_line(str(err)) or type(err).__name__


def public_choices(group: str, options: Iterable[str]) -> list[str]:
    """A config group's choices as a user picks them: without the internal schemas
    (``*_defaults``) its configs build on."""
    from pfednas.options import SCHEMA_SUFFIX

    return sorted({o for o in options if not o.endswith(SCHEMA_SUFFIX)})


def did_you_mean(name: str, names: Sequence[str], *, prefix: str = "") -> str:
    """``"; did you mean PREFIX<closest>?"`` for the names closest to ``name`` (difflib);
    ``""`` where none is close."""
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def override_key(override: str) -> str:
    """The key an override sets: ``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def key_suggestion(full_key: str, overrides: Sequence[str]) -> str:
    """Where an unknown ``full_key`` has a near namesake in the config the rest of the command
    line composes: ``"; did you mean dataset.partitioner?"``; else which node lacks it."""
    from hydra.errors import HydraException

    parent, _, leaf = full_key.rpartition(".")
    rest = [o for o in overrides if override_key(o) != full_key
            and not override_key(o).startswith(full_key + ".")]
    try:
        node = compose(rest) if not parent else OmegaConf.select(compose(rest), parent)
    except (HydraException, OmegaConfBaseException):
        return ""
    if not isinstance(node, DictConfig):
        return ""
    names = [str(k) for k in node if k != "hydra"]
    found = did_you_mean(leaf, names, prefix=f"{parent}." if parent else "")
    return found or f": {parent or 'the config'} has no option {leaf!r} (pfednas --help lists them)"


def job_overrides(overrides: list[str]) -> Iterator[list[str]]:
    """The override lists to compose for a command line: itself, or for a sweep the fixed
    overrides with each swept value in turn (values that do not stand alone are skipped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    yield [line for line in fixed if line is not None]
    for sweep in (o for o in parsed if o.is_sweep_override()):
        try:
            values = list(sweep.sweep_string_iterator())
        except HydraException:  # e.g. glob(): expanded by Hydra's sweeper only
            continue
        for value in values:
            line = f"{sweep.get_key_element()}={value}"
            try:
                if parser.parse_override(line).is_sweep_override():
                    continue
            except HydraException:
                continue
            yield [*fixed, line]  # type: ignore[list-item]


def internal_choice(argv: list[str]) -> str | None:
    """A ``GROUP=<name>_defaults``: the typed schema a group's configs build on (e.g.
    ``method=fedavg_defaults``, ``dataset=dataset_defaults``), which Hydra would accept as a
    choice of its own."""
    from pfednas.config import conf_dir
    from pfednas.config.help import group_choices
    from pfednas.options import SCHEMA_SUFFIX

    for arg in argv:
        key, _, value = arg.partition("=")
        group = key.lstrip("+~")
        chosen = [v.strip() for v in value.split(",")]
        if group in ("method", "dataset", "federation") and any(
                v.endswith(SCHEMA_SUFFIX) for v in chosen):
            name = next(v for v in chosen if v.endswith(SCHEMA_SUFFIX))
            choices = ", ".join(group_choices(conf_dir())[group])
            return (f"{group}={name} is the schema the {group} configs build on, not a "
                    f"choice; {group}: {choices}")
    return None


def composition_error(argv: list[str]) -> str | None:
    """Why Hydra cannot compose the job(s) of this command line, in one line; None when it
    can, or when the command line asks Hydra for something else (``--help``, ``--cfg``...)."""
    from hydra.errors import HydraException

    internal = internal_choice(argv)
    if internal is not None:
        return internal
    if any(arg.startswith("-") and arg not in HYDRA_RUN_FLAGS for arg in argv):
        return None
    overrides: list[str] = []
    try:
        for overrides in job_overrides([a for a in argv if a not in HYDRA_RUN_FLAGS]):
            compose(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        return hydra_message(err, overrides)
    return unknown_appended(argv)


def unknown_appended(argv: list[str]) -> str | None:
    """An appended top-level key that nothing reads (``+seeds=3``: Hydra adds it, and the
    run would go on with ``seed`` as it was), named with the closest of the config's own."""
    known = [str(k) for k in compose() if k != "hydra"]
    for arg in argv:
        top = override_key(arg).split(".")[0]
        if arg.startswith("+") and "=" in arg and top not in known:
            return f"unknown key {top}{did_you_mean(top, known)}"
    return None


CONFIG_FLAGS = ("--cfg", "-c")  # Hydra prints the composed config (job | hydra | all)


def printed_config_error(argv: list[str]) -> str | None:
    """Why the config that ``pfednas --cfg job ...`` would print is not a valid run, in one
    line (the same checks a run makes before it starts); None when it is, or when the
    command line asks for something else."""
    flag = next((i for i, a in enumerate(argv) if a in CONFIG_FLAGS), None)
    if flag is None or flag + 1 >= len(argv) or argv[flag + 1] not in ("job", "all"):
        return None
    rest = argv[:flag] + argv[flag + 2:]
    if any(a.startswith("-") for a in rest):
        return None
    from hydra.errors import HydraException

    from pfednas.config import settings_from_cfg

    try:
        settings_from_cfg(compose(rest))
    except (ConfigError, ValueError) as err:
        return one_line(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        return hydra_message(err, rest)
    return None


def check_runnable(settings: RunSettings, *, deployment: bool = False) -> None:
    """The method's strategy builds, and a resume fits it; :class:`ConfigError` otherwise.

    The strategy is built here and thrown away (the ServerApp builds its own), as the run
    will build it: a simulation's (seeded client profiles) or a ``deployment``'s; its
    construction notes are the ServerApp's to print, not repeated here.
    """
    from pfednas.app.checkpoint import verified_resume
    from pfednas.methods.build import build_strategy

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            strategy = build_strategy(settings, deployment=deployment)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"method={settings.method}: {one_line(str(err))}") from err
    if settings.resume:
        verified_resume(Path(settings.resume), strategy, settings.federation.num_rounds)
