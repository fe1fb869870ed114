"""The K3s nodes' `registries.yaml`: docker.io and ghcr.io mirrored to the Nexus docker-group, with the pull login."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from release.errors import ConfigError, OperationError
from release.fsutil import read_regular, write_atomic
from release.masking import mask_credentials
from release.topology.model import Topology

if TYPE_CHECKING:
    from pydantic import SecretStr

PASSWORD_ENV = "FRACTALOPS_NEXUS_PULL_PASSWORD"
MASK = "********"
MIRRORED = ("docker.io", "ghcr.io")


def pull_password(secret: SecretStr | None) -> str:
    """The node pull password (the FRACTALOPS_NEXUS_PULL_PASSWORD setting, from OpenBao's runtime scope)."""
    password = secret.get_secret_value() if secret is not None else ""
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


# Keys whose value is a credential (compared lower-case, without '_' and '-'); a mapping under one of them holds
# credentials in every field but the user name (K3s: configs.<host>.auth.{username,password,auth,identity_token}).
_SECRET_KEYS = frozenset(
    ["password", "passwd", "auth", "identitytoken", "token", "secret", "accesstoken", "refreshtoken", "registrytoken"]
)
_SECRET_SUFFIXES = ("password", "token", "secret")
_PUBLIC_KEYS = frozenset(["username", "user"])
_MISSING = object()


def _is_secret(key: Any, inside: bool) -> bool:
    """Whether the value under `key` is a credential (`inside`: the key sits in a credentials mapping)."""
    name = re.sub(r"[^a-z0-9]", "", str(key).lower())
    if name in _PUBLIC_KEYS:
        return False
    return inside or name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def _masked(node: Any, other: Any, secrets: list[str], inside: bool = False, mark: bool = False) -> Any:
    """`node` with every credential replaced by the mask (`mark`: "(differs)" where `other` holds another value)."""
    if isinstance(node, dict):
        masked = {}
        for key, value in node.items():
            there = other.get(key, _MISSING) if isinstance(other, dict) else _MISSING
            if not _is_secret(key, inside):  # a user name in a credentials mapping, or no credential at all
                masked[key] = _masked(value, there, secrets, False, mark)
            elif isinstance(value, dict | list):
                masked[key] = _masked(value, there, secrets, True, mark)
            else:
                if isinstance(value, str):
                    secrets.append(value)
                differs = mark and there is not _MISSING and there != value
                masked[key] = MASK + " (differs)" if differs else MASK
        return masked
    if isinstance(node, list):
        return [
            _masked(item, other[n] if isinstance(other, list) and n < len(other) else _MISSING, secrets, inside, mark)
            for n, item in enumerate(node)
        ]
    if inside:
        if isinstance(node, str):
            secrets.append(node)
        return MASK
    return mask_credentials(node) if isinstance(node, str) else node


def _emit(node: Any, indent: int = 0) -> list[str]:
    """`node` as block YAML lines in the renderer's own style; every scalar JSON-quoted, so nothing prints raw."""
    pad = " " * indent

    def scalar(value: Any) -> str:
        return json.dumps(value if isinstance(value, str | int | float | bool) or value is None else str(value))

    def key(value: Any) -> str:
        text = str(value)
        return text if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) else scalar(value)

    lines: list[str] = []
    if isinstance(node, dict):
        for name, value in node.items():
            if isinstance(value, dict | list) and value:
                lines.append(f"{pad}{key(name)}:")
                lines += _emit(value, indent + 2)
            else:
                lines.append(f"{pad}{key(name)}: {'{}' if value == {} else '[]' if value == [] else scalar(value)}")
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list) and item:
                nested = _emit(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{pad}- {'{}' if item == {} else '[]' if item == [] else scalar(item)}")
    else:
        lines.append(pad + scalar(node))
    return lines


def _parse(text: str) -> Any:
    """The YAML document in `text` (safe loader); aliases are refused (they could expand without bound)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.events import AliasEvent

    yaml = YAML(typ="safe", pure=True)
    if any(isinstance(event, AliasEvent) for event in yaml.parse(text)):
        raise ValueError("uses YAML aliases")
    return yaml.load(text)


def drift(path: Path, rendered: str) -> str:
    """A unified diff between the node's file and the rendered one, both parsed and every credential masked.

    '' if the files are equal. The node's text is never printed: a file that does not parse is reported as
    drifted without its content, and any secret value met on either side is scrubbed from the diff once more.
    """
    from ruamel.yaml.error import YAMLError

    try:
        current = read_regular(path).decode("utf-8")
    except OSError as err:
        raise OperationError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        return f"--- {path}\n+++ rendered\n  (the node's file is not UTF-8 text; not shown)\n"
    if current == rendered:
        return ""
    try:
        node = _parse(current)
    except (YAMLError, ValueError, RecursionError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return (
            f"--- {path}\n+++ rendered\n  (the node's file is not valid YAML{where}; not shown: it may hold a secret)\n"
        )
    wanted = _parse(rendered)
    if node == wanted:
        return f"--- {path}\n+++ rendered\n  (same settings; only comments or layout differ)\n"
    secrets: list[str] = []
    masked_node = _masked(node, wanted, secrets, mark=True)
    masked_wanted = _masked(wanted, node, secrets)
    if _masked(node, wanted, []) == masked_wanted:
        return f"--- {path}\n+++ rendered\n  (only the password or another credential differs; not shown)\n"
    diff = "".join(
        difflib.unified_diff(
            [line + "\n" for line in _emit(masked_node)],
            [line + "\n" for line in _emit(masked_wanted)],
            fromfile=str(path),
            tofile="rendered",
        )
    )
    # Belt and braces: a credential that also sits in a field not known to hold one is hidden there too.
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        for form in {secret, json.dumps(secret)[1:-1]}:
            diff = diff.replace(form, MASK)
    return diff
