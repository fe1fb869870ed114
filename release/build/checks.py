"""Checks of a release's inputs, made before any build: a mistake found after a push loses the push."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.errors import ConfigError, UsageError

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


def mask_credentials(text: str) -> str:
    """`scheme://user:password@host…` with the user and password replaced by `***`.

    The credentials run to the last `@` before the next white space, so a password holding a raw `/` or `@`
    is hidden whole (a path holding `@` is masked up to it: more hidden, nothing shown).
    """
    return re.sub(r"//\S*@", "//***@", text)


def _mask_url(value: str) -> str:
    """One URL with everything between its scheme and its last `@` replaced by `***` (white space included)."""
    if "@" not in value:
        return value
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?://)?", value)
    return (scheme.group(0) if scheme else "") + "***@" + value.rpartition("@")[2]


def source_commit(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, sha) from FRACTALOPS_SOURCE_COMMIT or GITHUB_SHA; a value that is not a full sha is a usage error."""
    for name in ("FRACTALOPS_SOURCE_COMMIT", "GITHUB_SHA"):
        value = env.get(name)
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


def build_files(targets: Iterable[Any], root: Path, source: str) -> None:
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
        if target.target.lower() not in stages and not any("$" in name for name in stages):
            known = ", ".join(stages) or "none"
            raise ConfigError(
                f"{where}.target: {shown(target.target)}: no such stage in {dockerfile} (stages: {known})"
            )


def output_file(variable: str, env: Mapping[str, str]) -> None:
    """A file named by `variable` (GITHUB_OUTPUT, GITHUB_STEP_SUMMARY) can be appended to; else a ConfigError."""
    value = env.get(variable)
    if not value:
        return
    path = Path(os.path.realpath(value))  # a symlink is checked where it points
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"{variable}={value!r}: is a folder, not a file")
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{variable}={value!r}: not writable")
        return
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{variable}={value!r}: {str(parent)!r} is a file, not a folder")
    if not parent.is_dir():
        raise ConfigError(f"{variable}={value!r}: the folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{variable}={value!r}: cannot create a file in {str(parent)!r}")


@dataclass(frozen=True)
class SinkURL:
    """An events sink: the URL to POST to (credentials removed), its Authorization header, and a printable form."""

    url: str
    authorization: str | None
    shown: str


def events_url(variable: str, value: str) -> SinkURL:
    """Parse the events sink URL: http(s) with a host; `user:password@` becomes Basic auth and is never shown."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value.strip()):
        shown = _mask_url(value)
        raise UsageError(f"{variable}={shown!r}: want an http:// or https:// URL with a host")
    if "@" in value.strip().partition("//")[2].partition(parts.netloc)[2]:
        # `user:pa/ss@host` reads as host `user`, port `pa` and a path: whatever follows is ambiguous.
        raise UsageError(
            f"{variable}={_mask_url(value)!r}: an '@' after the host; percent-encode '/', '?', '#' and '@' "
            "in the user name and password (%2F, %3F, %23, %40)"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return SinkURL(clean, authorization, urlunsplit((parts.scheme, netloc, parts.path or "/", "", "")))
