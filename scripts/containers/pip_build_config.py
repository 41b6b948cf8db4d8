"""The host's pip index settings, handed to a container build.

``python3 pip_build_config.py OUT_DIR`` reads ``pip config list`` (files and ``PIP_*``
variables, as the host's pip resolves them), writes ``OUT_DIR/pip.conf`` with the same
index settings and ``cert`` pointing at the CA bundle the build mounts, and prints the
host folders those settings read from (``file://`` indexes, ``find-links`` folders): the
build mounts each one read-only at the same path. Nothing is written into an image: the
build mounts ``pip.conf`` as ``/etc/pip.conf`` only while its ``RUN`` steps run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# pip's own names for the settings that say where packages come from.
INDEX_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "no-index",
              "default-timeout", "timeout")
# Later sections override earlier ones, as in pip (PIP_* variables last).
SECTION_ORDER = ("global", "install", ":env:")
BUILD_CA_PATH = "/etc/ssl/certs/pfednas-build-ca.crt"


def parse_config_list(text: str) -> dict[str, str]:
    """``pip config list`` lines (``section.key='value'``) -> the effective index settings."""
    by_section: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot:
            continue
        by_section.setdefault(section, {})[key] = value.strip().strip("'\"")
    settings: dict[str, str] = {}
    for section in SECTION_ORDER:
        for key, value in by_section.get(section, {}).items():
            if key in INDEX_KEYS or key == "cert":
                settings[key] = value
    return settings


def local_sources(settings: dict[str, str]) -> list[str]:
    """Host folders the index settings read: a ``file://.../simple`` index's parent folder
    (its pages link to ``../../files``), a ``find-links`` folder."""
    folders: list[str] = []
    for key in ("index-url", "extra-index-url", "find-links"):
        for item in settings.get(key, "").split():
            path = item.removeprefix("file://") if item.startswith("file://") else item
            if "://" in path or not path.startswith("/"):
                continue
            folder = Path(path)
            if folder.name == "simple":
                folder = folder.parent
            if str(folder) not in folders:
                folders.append(str(folder))
    return folders


def render_pip_conf(settings: dict[str, str], ca_path: str = BUILD_CA_PATH) -> str:
    """A ``pip.conf`` with the host's index settings and the build's CA bundle."""
    lines = ["[global]", f"cert = {ca_path}"]
    lines += [f"{key} = {settings[key]}" for key in INDEX_KEYS if key in settings]
    return "\n".join(lines) + "\n"


def host_ca_bundle(settings: dict[str, str]) -> str:
    """The CA bundle the host's pip trusts (its ``cert`` setting, else Debian's bundle)."""
    return settings.get("cert") or "/etc/ssl/certs/ca-certificates.crt"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: pip_build_config.py OUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, check=True).stdout
    settings = parse_config_list(listed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pip.conf").write_text(render_pip_conf(settings))
    (out_dir / "ca.crt").write_bytes(Path(host_ca_bundle(settings)).read_bytes())
    for folder in local_sources(settings):
        print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
