"""Dotted key paths into a values file (`image.tag`, `podAnnotations."a.b/c"`): the syntax targets.yaml uses."""

from __future__ import annotations

import re

from release.errors import ConfigError

_SEGMENT = re.compile(r'"([^"]+)"|([^."]+)')


def parse_path(path: str) -> tuple[str, ...]:
    """Split a dotted key path; a segment holding dots is written in double quotes (`a."b.c"`)."""
    parts: list[str] = []
    position = 0
    while position <= len(path):
        match = _SEGMENT.match(path, position)
        if not match:
            raise ConfigError(f"key path {path!r} is malformed (want dotted keys, e.g. image.tag)")
        parts.append(match.group(1) or match.group(2))
        position = match.end()
        if position == len(path):
            return tuple(parts)
        if path[position] != ".":
            raise ConfigError(f"key path {path!r} is malformed (want dotted keys, e.g. image.tag)")
        position += 1
    raise ConfigError(f"key path {path!r} is malformed (ends with a dot)")
