"""What of a build context reaches BuildKit: the Dockerfile, and every file its .dockerignore does not exclude.

`differences` tells which changed files reach it (a dirty build); `context_digest` is one digest of all it receives.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from release.build.dockerignore import IgnoreRules, ignore_patterns
from release.errors import Unknowable

if TYPE_CHECKING:
    from release.targets import Target


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a context-relative file is excluded (by patterns BuildKit's reading of is unsure: not excluded)."""
    rules = _rules(lambda: patterns)
    return rules is not None and rules.excluded(path)


def _rules(patterns: Callable[[], Iterable[str]]) -> IgnoreRules | None:
    """The compiled patterns; None when they cannot be told for sure (then every file counts as sent: dirty)."""
    try:
        return IgnoreRules(patterns())
    except Unknowable:
        return None


def files_sent(context: str, dockerfile: str, paths: list[str], root: Path) -> list[str]:
    """Those of `paths` (repository-relative) that reach BuildKit when building `context` with `dockerfile`."""
    prefix = PurePosixPath(context)
    rules = _rules(lambda: ignore_patterns(root / context, root / context / dockerfile))
    always = {str(prefix / dockerfile), str(prefix / f"{dockerfile}.dockerignore"), str(prefix / ".dockerignore")}
    sent = []
    for path in paths:
        if path in always:
            sent.append(path)
            continue
        try:
            relative = str(PurePosixPath(path).relative_to(prefix))
        except ValueError:
            continue
        if rules is None or not rules.excluded(relative):
            sent.append(path)
    return sent


def differences(
    root: Path, targets: Iterable[Target], changed: list[str], given: str | None, head: str | None
) -> list[str]:
    """Why the build input is not the source commit `given` (empty when it is): another checkout, changed files sent.

    `changed` are the repository's files that differ from HEAD (changed, untracked or ignored), `head` its commit.
    """
    reasons: list[str] = []
    if given and head and head != given:
        reasons.append(f"the checkout is {head[:12]}, not the source commit {given[:12]}")
    files = sorted({path for t in targets for path in files_sent(t.context, t.dockerfile, changed, root)})
    if files:
        listed = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        reasons.append(f"uncommitted: {listed}")
    return reasons


_CHUNK = 1 << 20


def _unreadable(path: str | Path, err: OSError) -> Unknowable:
    """The error for a file or folder that cannot be read."""
    return Unknowable(f"{path}: cannot read: {err.strerror or err}")


def _file_sha256(path: str) -> str:
    """sha256 hex of a file's content, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise _unreadable(path, err) from err
    return digest.hexdigest()


def _walk(context: Path, rules: IgnoreRules) -> Iterator[tuple[str, str]]:
    """(relative POSIX path, absolute path) of every entry under the context, parents first, names sorted."""

    def fail(err: OSError) -> None:
        raise _unreadable(err.filename or context, err)

    prune = not rules.has_exceptions
    root = os.fspath(context)
    for top, dirnames, filenames in os.walk(root, onerror=fail):
        base = os.path.relpath(top, root).replace(os.sep, "/")
        prefix = "" if base == "." else base + "/"
        if prune:
            dirnames[:] = [name for name in dirnames if not rules.excluded(prefix + name)]
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield prefix + name, os.path.join(top, name)


def _kind(mode: int) -> str:
    """The entry's kind as the digest records it."""
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _xattrs(path: str) -> list[list[str]]:
    """The entry's extended attributes (BuildKit's file hashes include them), sorted; [] where unsupported."""
    if not hasattr(os, "listxattr"):
        return []
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
        return [[name, os.getxattr(path, name, follow_symlinks=False).hex()] for name in names]
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise _unreadable(path, err) from err


def _entry(relative: str, path: str, links: dict[tuple[int, int], str]) -> bytes:
    """One entry as one JSON line: path, kind, permission bits, content or link target, hard link, xattrs."""
    try:
        info = os.lstat(path)
    except OSError as err:
        raise _unreadable(path, err) from err
    kind = _kind(info.st_mode)
    payload: str | int = ""
    hardlink = ""
    if kind == "file":
        payload = _file_sha256(path)
        if info.st_nlink > 1:
            first = links.setdefault((info.st_dev, info.st_ino), relative)
            hardlink = "" if first == relative else first
    elif kind == "symlink":
        try:
            payload = os.readlink(path)
        except OSError as err:
            raise _unreadable(path, err) from err
    elif kind == "other":
        payload = info.st_rdev
    fields = [relative, kind, stat.S_IMODE(info.st_mode), payload, hardlink, _xattrs(path)]
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _sent(context: Path, rules: IgnoreRules) -> list[tuple[str, str]]:
    """The entries BuildKit sends: those not excluded, and the folders above any of them (a `!` exception keeps them)."""
    entries = list(_walk(context, rules))
    kept = {relative for relative, _ in entries if not rules.excluded(relative)}
    for relative in list(kept):
        parent = posixpath.dirname(relative)
        while parent and parent not in kept:
            kept.add(parent)
            parent = posixpath.dirname(parent)
    return [(relative, path) for relative, path in entries if relative in kept]


def context_digest(context: Path, dockerfile: Path) -> str:
    """sha256 hex of every entry of the context BuildKit would send (path, kind, permission bits, content or link target)."""
    patterns = ignore_patterns(context, dockerfile)
    rules = IgnoreRules(patterns)
    digest = hashlib.sha256()
    header = {"dockerfile": _file_sha256(os.fspath(dockerfile)), "ignore": list(patterns)}
    digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    try:
        root = os.stat(context)
    except OSError as err:
        raise _unreadable(context, err) from err
    digest.update(json.dumps([".", "dir", stat.S_IMODE(root.st_mode)], separators=(",", ":")).encode() + b"\n")
    links: dict[tuple[int, int], str] = {}
    for relative, path in _sent(context, rules):
        digest.update(_entry(relative, path, links))
    return digest.hexdigest()
