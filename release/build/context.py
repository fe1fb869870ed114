"""What of a build context reaches BuildKit: the Dockerfile, and every file its .dockerignore does not exclude."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from release.targets import Target


def ignore_patterns(context: Path, dockerfile: str) -> list[str]:
    """The patterns BuildKit applies: `<Dockerfile>.dockerignore` beside the Dockerfile if present, else `.dockerignore`."""
    for candidate in (context / f"{dockerfile}.dockerignore", context / ".dockerignore"):
        try:
            text = candidate.read_text(encoding="utf-8")
        except OSError:
            continue
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return []


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression over slash paths."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):
                out[-1] = "(?:.*/)?"
                i += 1
            continue
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a context-relative file is excluded: the last matching pattern (or `!exception`) decides."""
    candidates = [
        str(PurePosixPath(*PurePosixPath(path).parts[:n])) for n in range(1, len(PurePosixPath(path).parts) + 1)
    ]
    result = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = str(PurePosixPath("/" + raw.removeprefix("!").strip())).lstrip("/") or "."
        # A pattern that matches a folder covers what is in it, for exclusions and `!` exceptions alike.
        if any(_regex(pattern).fullmatch(target) for target in candidates):
            result = not negated
    return result


def files_sent(context: str, dockerfile: str, paths: list[str], root: Path) -> list[str]:
    """Those of `paths` (repository-relative) that reach BuildKit when building `context` with `dockerfile`."""
    prefix = PurePosixPath(context)
    patterns = ignore_patterns(root / context, dockerfile)
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
        if not ignored(relative, patterns):
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
