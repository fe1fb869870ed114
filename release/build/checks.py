"""Checks of a release's build inputs, made before any build: a mistake found after a push loses the push."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from release.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from release.targets import Target

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# GOOS / GOARCH values buildx and BuildKit know; anything else is a typo that buildx would push as is.
_OS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
    ]
)
_ARCH = frozenset(
    [
        "386",
        "amd64",
        "arm",
        "arm64",
        "loong64",
        "mips",
        "mips64",
        "mips64le",
        "mipsle",
        "ppc64",
        "ppc64le",
        "riscv64",
        "s390x",
        "wasm",
    ]
)
# The variants BuildKit knows per architecture (GOAMD64, GOARM, arm64 versions); others fail inside the build.
_VARIANTS = {
    "amd64": {"v1", "v2", "v3", "v4"},
    "arm": {"v5", "v6", "v7", "v8"},
    "arm64": {"v8", "v9", *(f"v8.{n}" for n in range(10)), *(f"v9.{n}" for n in range(6))},
}
_STAGE = re.compile(r"^[ \t]*FROM[ \t]+.*?[ \t]+AS[ \t]+(\S+)[ \t]*$", re.IGNORECASE | re.MULTILINE)


def source_commit(setting: str | None, github_sha: str | None) -> tuple[str, str] | None:
    """(variable, sha) from FRACTALOPS_SOURCE_COMMIT, else GITHUB_SHA; a value that is not a full sha is a usage error."""
    for name, value in (("FRACTALOPS_SOURCE_COMMIT", setting), ("GITHUB_SHA", github_sha)):
        if value:
            if not _SHA.fullmatch(value):
                raise UsageError(f"{name}={value[:80]!r}: want a full commit sha (40 lowercase hex digits)")
            return name, value
    return None


def platforms(values: Iterable[str], source: str) -> tuple[str, ...]:
    """Each `os/arch[/variant]` (or `local`; comma lists split) checked; an empty or unknown part is a usage error."""
    checked = []
    for value in (item.strip() for given in values for item in given.split(",")):
        parts = value.split("/")
        if value == "local":
            checked.append(value)
            continue
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"{source}: {value!r}: want os/arch[/variant], e.g. linux/amd64 or linux/arm64")
        if parts[0] not in _OS:
            raise UsageError(f"{source}: {value!r}: unknown OS {parts[0]!r} (want e.g. linux)")
        if parts[1] not in _ARCH:
            raise UsageError(f"{source}: {value!r}: unknown architecture {parts[1]!r} (want e.g. amd64 or arm64)")
        if len(parts) == 3 and parts[2] not in _VARIANTS.get(parts[1], set()):
            known = ", ".join(sorted(_VARIANTS.get(parts[1], set()))[:6]) or "none"
            raise UsageError(f"{source}: {value!r}: unknown variant {parts[2]!r} for {parts[1]} (known: {known})")
        if value not in checked:
            checked.append(value)
    return tuple(checked)


def build_files(targets: Iterable[Target], root: Path, source: str) -> None:
    """Each target's context, Dockerfile and stage exist inside the repository; else a ConfigError naming the field."""
    from release.yamlfile import read_text, shown

    real_root = root.resolve()
    for target in targets:
        where = f"{source}: targets.{target.name}"
        for field, relative in (("context", target.context), ("dockerfile", f"{target.context}/{target.dockerfile}")):
            real = (root / relative).resolve()  # a symlink is judged by where it points
            if not real.is_relative_to(real_root):
                value = shown(getattr(target, field))
                raise ConfigError(f"{where}.{field}: {value}: resolves outside the repository (to {real})")
        context = root / target.context
        if not context.is_dir():
            raise ConfigError(f"{where}.context: {shown(target.context)}: no such folder under {root}")
        dockerfile = context / target.dockerfile
        try:
            text = read_text(dockerfile, "Dockerfile", errors="replace")
        except ConfigError as err:
            reason = str(err).removeprefix(f"{dockerfile}: ").removeprefix("cannot read the Dockerfile: ")
            raise ConfigError(
                f"{where}.dockerfile: {shown(target.dockerfile)}: cannot read {dockerfile}: {reason}"
            ) from None
        stages = [name.lower() for name in _STAGE.findall(text)]
        if target.stage.lower() not in stages and not any("$" in name for name in stages):
            known = ", ".join(stages) or "none"
            raise ConfigError(f"{where}.stage: {shown(target.stage)}: no such stage in {dockerfile} (stages: {known})")
