"""Load a topology file into the model; every error names the file, field path and value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from release.errors import ConfigError
from release.topology.model import Topology, _FieldError
from release.topology.retired import retired
from release.yamlfile import field_path, one_line, shown

RELATIVE_PATH = Path("ops/topology/fractalops.yaml")


def repo_root(start: Path | None = None, *, explicit: Path | None = None) -> Path | None:
    """`explicit` (FRACTALOPS_REPO_ROOT), else the nearest folder at or above `start` (cwd) holding the topology, else ours."""
    if explicit is not None:
        if not (explicit / RELATIVE_PATH).is_file():
            raise ConfigError(
                f"FRACTALOPS_REPO_ROOT={str(explicit)!r}: not a repository root (no {RELATIVE_PATH} there)"
            )
        return explicit.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / RELATIVE_PATH).is_file():
            return folder
    package_root = Path(__file__).resolve().parents[2]
    return package_root if (package_root / RELATIVE_PATH).is_file() else None


def default_topology_path(root: Path | None = None) -> Path:
    """The committed topology file of the repository at `root` (default: found from the working directory)."""
    root = root or repo_root()
    if root is None:
        raise ConfigError("no topology file: set FRACTALOPS_TOPOLOGY or pass --topology")
    return root / RELATIVE_PATH


def _walk(data: Any) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """Yield (path, key, value) for every mapping entry and list item below `data` (iteratively: no recursion)."""
    pending: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while pending:
        path, node = pending.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            where = (*path, str(key))
            yield where, key, value
            pending.append((where, value))


def _refuse_retired(source: str, data: Any) -> None:
    """Refuse a standalone registry-cache host or a pull password in the topology."""
    facts = retired()
    for loc, key, value in _walk(data):
        if isinstance(key, str) and key.lower() in facts.keys:
            raise ConfigError(
                f"{source}: {field_path(loc)}: a standalone cache VM/LXC key ({shown(key)}): {facts.folded_message}"
            )
        if isinstance(key, str) and "password" in key.lower():
            raise ConfigError(
                f"{source}: {field_path(loc)}: the pull password never lives in the topology; "
                "it is read from FRACTALOPS_NEXUS_PULL_PASSWORD at render time"
            )
        if isinstance(value, str) and any(a in value for a in (*facts.addresses, *facts.names)):
            raise ConfigError(
                f"{source}: {field_path(loc)}: {shown(value)} is the retired standalone cache: {facts.folded_message}"
            )


def parse_topology(data: Any, source: str) -> Topology:
    """Validate already-loaded YAML data as a topology."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the topology must be a mapping, got {type(data).__name__}")
    _refuse_retired(source, data)
    try:
        return Topology.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc, value, message = tuple(first["loc"]), first.get("input"), first["msg"]
        original = (first.get("ctx") or {}).get("error")
        if isinstance(original, _FieldError):
            loc, value, message = original.loc, original.value, str(original)
        elif first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] in ("model_type", "dict_type", "model_attributes_type"):
            message = "want a mapping"  # pydantic names its model class here; the file's reader needs the shape
        message = message.removeprefix("Value error, ")
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(f"{source}: {field_path(loc)}: {shown(value)}: {one_line(message)}{more}") from None


def load_topology(path: Path | str | None = None) -> Topology:
    """Read and validate the topology at `path` (default: the committed one, see `default_topology_path`)."""
    from release.yamlfile import read_yaml

    topology_path = Path(path) if path else default_topology_path()
    data = read_yaml(topology_path, "topology")
    return parse_topology(data, str(topology_path))
