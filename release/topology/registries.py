"""Render a K3s `registries.yaml` that mirrors docker.io and ghcr.io to the Nexus docker-group."""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

from release.errors import ConfigError, OperationError
from release.fsutil import write_atomic
from release.topology.model import Topology

PASSWORD_ENV = "FRACTALOPS_NEXUS_PULL_PASSWORD"
MASK = "********"
MIRRORED = ("docker.io", "ghcr.io")


def pull_password() -> str:
    """The node pull password from the environment (OpenBao's runtime scope puts it there)."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        raise ConfigError(f"{PASSWORD_ENV} is not set: export it from OpenBao's runtime scope; nothing was written")
    return password


def render_registries(topology: Topology, password: str) -> str:
    """The registries.yaml text; strings are JSON-quoted, which YAML reads back exactly."""
    endpoint = topology.node_mirror_endpoint
    q = json.dumps
    lines = ["# Rendered by fractalops-release from the topology; do not edit by hand.", "mirrors:"]
    for registry in MIRRORED:
        lines += [f"  {q(registry)}:", "    endpoint:", f"      - {q(endpoint)}"]
    lines += [
        "configs:",
        f"  {q(topology.node_mirror_hostport)}:",
        "    auth:",
        f"      username: {q(topology.node_mirror.pull_username)}",
        f"      password: {q(password)}",
    ]
    return "\n".join(lines) + "\n"


def write_registries(path: Path, text: str) -> None:
    """Write the rendered file atomically with mode 0600 (it holds a secret)."""
    try:
        write_atomic(path, text.encode(), mode=0o600)
    except OSError as err:
        raise OperationError(f"{path}: cannot write: {err.strerror}") from None


# Any line holding a secret: password, token, identitytoken or secret keys with a value.
_SECRET_LINE = re.compile(
    r"^(\s*[\"']?(?:password|token|identitytoken|secret)[\"']?\s*:\s*)(\S.*)$", re.MULTILINE | re.IGNORECASE
)


def _secrets(text: str) -> list[str]:
    """The secret values of a file, in order."""
    return [match.group(2) for match in _SECRET_LINE.finditer(text)]


def _mask(text: str, label: str = MASK) -> str:
    """Replace the value of every secret line, whatever the secret is."""
    return _SECRET_LINE.sub(lambda m: f'{m.group(1)}"{label}"', text)


def drift(path: Path, rendered: str) -> str:
    """A unified diff (password masked) between the node's file and the rendered one; '' if equal."""
    try:
        current = path.read_text(encoding="utf-8")
    except OSError as err:
        raise OperationError(f"{path}: cannot read: {err.strerror}") from None
    if current == rendered:
        return ""
    if _mask(current) == _mask(rendered):
        return f"--- {path}\n+++ rendered\n  (only the password differs; not shown)\n"
    # Masked on both sides; a secret that differs is marked so, never shown.
    differs = _secrets(current) != _secrets(rendered)
    masked_current = _mask(current, MASK + " (differs)" if differs else MASK)
    masked_rendered = _mask(rendered)
    lines = difflib.unified_diff(
        masked_current.splitlines(keepends=True),
        masked_rendered.splitlines(keepends=True),
        fromfile=str(path),
        tofile="rendered",
    )
    return "".join(lines)
