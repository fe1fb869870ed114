"""The release targets (api, worker): how each is built and which values keys pin its image."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

from release.errors import ConfigError

if TYPE_CHECKING:
    from release.topology.model import Topology

RELATIVE_PATH = Path("ops/containers/fractalops/targets.yaml")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _relative(value: str) -> str:
    """A repository-relative POSIX path that stays inside the repository."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError("must be a path relative to the repository root, without '..'")
    return value


def _key_path(value: str) -> str:
    """A dotted key path the values editor understands."""
    from release.keypath import parse_path

    try:
        parse_path(value)
    except ConfigError as err:
        raise ValueError(str(err)) from None
    return value


class _Strict(BaseModel):
    """Base: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ValuesKeys(_Strict):
    """The values file of a target and the dotted keys that hold its image."""

    file: str
    repository: str
    digest: str
    tag: str | None = None
    revision: str | None = None
    tag_format: str = "sha-{short}"

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        return _relative(value)

    @field_validator("repository", "digest", "tag", "revision")
    @classmethod
    def _keys(cls, value: str | None) -> str | None:
        return value if value is None else _key_path(value)

    @field_validator("tag_format")
    @classmethod
    def _format(cls, value: str) -> str:
        try:
            value.format(short="0" * 7, revision="0" * 40)
        except (KeyError, IndexError, ValueError):
            raise ValueError("may only use {short} and {revision}") from None
        return value

    def paths(self) -> dict[str, str]:
        """Role (repository, tag, digest, revision) → key path, for the keys configured."""
        roles = {"repository": self.repository, "tag": self.tag, "digest": self.digest, "revision": self.revision}
        return {role: path for role, path in roles.items() if path is not None}


class Target(_Strict):
    """One release target: build inputs, image name and the values keys that pin it."""

    name: str
    context: str
    dockerfile: str = "Dockerfile"
    stage: str  # the Dockerfile stage built (buildx --target)
    image: str
    values: ValuesKeys

    @field_validator("context", "dockerfile")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _relative(value)

    @field_validator("name", "image", "stage")
    @classmethod
    def _dns(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("must be lowercase letters, digits and '-'")
        return value

    def repository(self, topology: Topology) -> str:
        """The release repository of this target's image, e.g. `ghcr.io/yamonco/fractalops-api`."""
        return topology.image_repository(self.image)


class _File(_Strict):
    """The targets file: a mapping of target name to target."""

    targets: dict[str, dict[str, Any]]


def in_repository(root: Path, relative: str, what: str, *, symlinks: bool = True) -> Path:
    """`root / relative` once it is known to resolve inside the repository; else a ConfigError naming the file.

    With `symlinks=False` (the values files) neither the file nor a folder on its way may be a symlink: git commits
    a link, not the file it points to, so an edit through it would land outside the commit.
    """
    path = root / relative
    if not symlinks:
        here = root
        for part in PurePosixPath(relative).parts:
            here = here / part
            if here.is_symlink():
                link = "the " + what if here == path else f"{here.relative_to(root)}, on the way to the {what},"
                raise ConfigError(
                    f"{path}: {link} is a symlink (to {os.readlink(here)}); git commits the link, not the file "
                    "it points to: commit the file itself"
                )
    real_root, real = root.resolve(), path.resolve()
    if not real.is_relative_to(real_root):
        raise ConfigError(f"{path}: the {what} resolves outside the repository (to {real})")
    return path


def read_values_file(root: Path, file: str) -> str:
    """The text of a values file: a regular UTF-8 file inside the repository, reached through no symlink."""
    from release.yamlfile import read_text

    return read_text(in_repository(root, file, "values file", symlinks=False), "values file")


def default_targets_path(root: Path) -> Path:
    """`<repository root>/ops/containers/fractalops/targets.yaml`."""
    return root / RELATIVE_PATH


def _fail(source: str, err: Any, prefix: tuple[Any, ...] = ()) -> ConfigError:
    from release.yamlfile import field_path, one_line, shown

    first = err.errors()[0]
    loc = field_path((*prefix, *first["loc"]))
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    if first["type"] in ("model_type", "dict_type", "model_attributes_type"):
        message = "want a mapping"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return ConfigError(f"{source}: {loc}: {shown(first.get('input'))}: {one_line(message)}{more}")


def parse_targets(data: Any, source: str) -> dict[str, Target]:
    """Validate already-loaded YAML data as a targets file."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the targets file must be a mapping, got {type(data).__name__}")
    try:
        raw = _File.model_validate(data)
    except ValidationError as err:
        raise _fail(source, err) from None
    if not raw.targets:
        raise ConfigError(f"{source}: targets: {{}}: at least one target is needed")
    result: dict[str, Target] = {}
    for name, body in raw.targets.items():
        from release.yamlfile import field_path, shown

        if "name" in body:
            raise ConfigError(
                f"{source}: {field_path(('targets', name, 'name'))}: {shown(body['name'])}: the name is the key; remove it"
            )
        if "target" in body:  # the key before `stage:`; read as nothing else, so it is refused by name
            raise ConfigError(
                f"{source}: {field_path(('targets', name, 'target'))}: {shown(body['target'])}: unknown key; "
                "the Dockerfile stage is `stage:`"
            )
        try:
            result[name] = Target.model_validate({"name": name, **body})
        except ValidationError as err:
            raise _fail(source, err, ("targets", name)) from None
    return result


def load_targets(path: Path | str) -> dict[str, Target]:
    """Read and validate the targets file at `path`."""
    from release.yamlfile import read_yaml

    data = read_yaml(Path(path), "targets file")
    return parse_targets(data, str(path))
