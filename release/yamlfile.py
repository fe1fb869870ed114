"""Read a YAML configuration file; unreadable or unparseable files are one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from release.errors import ConfigError


def read_yaml(path: Path, what: str) -> Any:
    """Load `path` (safe loader); errors name the file, the line and `what` it should be."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what}: {err.strerror}") from None
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
