"""What BuildKit leaves out of a build context: `.dockerignore` read and matched as moby's patternmatcher does.

A pattern whose reading by BuildKit is not certain (an escaped letter, a wildcard inside a character class) raises
`Unknowable` rather than being guessed: the callers then take the safe way (a build, a dirty label).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from release.errors import Unknowable


def _clean(path: str) -> str:
    """Go's filepath.Clean on a slash path (posixpath.normpath keeps a leading `//`, Go does not)."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _read_ignore_file(data: bytes) -> tuple[str, ...]:
    """The patterns of a .dockerignore file, as ignorefile.ReadAll returns them."""
    patterns = []
    for number, line in enumerate(data.decode("utf-8", "surrogateescape").split("\n")):
        pattern = line.removesuffix("\r").removeprefix("\ufeff") if number == 0 else line.removesuffix("\r")
        if pattern.startswith("#"):
            continue
        pattern = pattern.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return tuple(patterns)


def ignore_patterns(context: Path, dockerfile: Path) -> tuple[str, ...]:
    """The .dockerignore patterns BuildKit applies: `<Dockerfile name>.dockerignore` beside the Dockerfile, else `<context>/.dockerignore`; () if neither."""
    for candidate in (dockerfile.with_name(f"{dockerfile.name}.dockerignore"), context / ".dockerignore"):
        try:
            data = candidate.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise Unknowable(f"{candidate}: cannot read: {err.strerror or err}") from err
        return _read_ignore_file(data)
    return ()


def _bad_pattern(pattern: str, why: str) -> Unknowable:
    """The error for a pattern BuildKit refuses or this module cannot read as BuildKit does."""
    return Unknowable(f".dockerignore pattern {pattern!r}: {why}")


def _escaped(pattern: str, char: str) -> str:
    """An escaped character as a regular expression: punctuation only (Go and Python read escaped letters differently)."""
    if char.isalnum() or not char.isascii():
        raise _bad_pattern(pattern, f"cannot tell how BuildKit reads the escape \\{char}")
    return re.escape(char)


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One character of a character class (Go's getEsc) as a Python class member, and the index after it."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise _bad_pattern(pattern, "bad character class")
    char = pattern[i]
    if char in "*?[":
        raise _bad_pattern(pattern, f"cannot tell how BuildKit reads {char!r} in a character class")
    if char != "\\":
        return re.escape(char), i + 1
    if i + 1 >= len(pattern):
        raise _bad_pattern(pattern, "trailing backslash")
    return _escaped(pattern, pattern[i + 1]), i + 2


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """The Go filepath.Match character class opening at `start`, as a Python class, and the index after its `]`."""
    i, out = start + 1, ["["]
    if pattern.startswith("^", i):
        out.append("^")
        i += 1
    members = 0
    while not (members and pattern.startswith("]", i)):
        members += 1
        low, i = _class_char(pattern, i)
        out.append(low)
        if pattern.startswith("-", i):
            high, i = _class_char(pattern, i + 1)
            out.append("-" + high)
    return "".join(out) + "]", i + 1


@dataclass(frozen=True)
class _Rule:
    """One compiled pattern: moby matches exactly, by prefix (`x/**`), by suffix (`**/x`) or by regular expression."""

    exception: bool
    kind: str
    text: str
    regex: re.Pattern[str] | None

    def matches(self, path: str) -> bool:
        """Whether the pattern matches this one path (not its parents)."""
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


def _compile(pattern: str, exception: bool) -> _Rule:
    """A cleaned pattern compiled the way moby's Pattern.compile does it."""
    regex, kind, i = ["^"], "exact", 0
    first = True
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 3 if pattern.startswith("**/", i) else 2
            if i >= len(pattern):
                kind = "prefix" if kind == "exact" else "regex"
                regex.append(".*")
            else:
                kind = "regex"
                regex.append("(.*/)?")
            kind = "suffix" if first else kind
        elif char == "*":
            regex.append("[^/]*")
            kind, i = "regex", i + 1
        elif char == "?":
            regex.append("[^/]")
            kind, i = "regex", i + 1
        elif char == "\\":
            if i + 1 >= len(pattern):
                raise _bad_pattern(pattern, "trailing backslash")
            regex.append(_escaped(pattern, pattern[i + 1]))
            kind, i = "regex", i + 2
        elif char == "[":
            part, i = _char_class(pattern, i)
            regex.append(part)
            kind = "regex"
        else:
            regex.append(re.escape(char))
            i += 1
        first = False
    if kind != "regex":
        return _Rule(exception, kind, pattern, None)
    return _Rule(exception, kind, pattern, re.compile("".join(regex) + r"\Z"))


class IgnoreRules:
    """The .dockerignore patterns compiled once, answering which context paths BuildKit leaves out."""

    def __init__(self, patterns: Iterable[str]) -> None:
        """Compile the patterns as moby's patternmatcher.New does; a pattern BuildKit refuses raises Unknowable."""
        rules = []
        for raw in patterns:
            pattern = raw.strip()
            if not pattern:
                continue
            pattern = _clean(pattern)
            exception = pattern.startswith("!")
            if exception:
                if pattern == "!":
                    raise _bad_pattern(raw, 'illegal exclusion pattern: "!"')
                pattern = pattern[1:]
            if len(pattern) > 1 and pattern.startswith("/"):  # as the file reader does: paths are context-relative
                pattern = pattern[1:]
            rules.append(_compile(pattern, exception))
        self._rules = tuple(rules)
        self.has_exceptions = any(rule.exception for rule in rules)

    def excluded(self, path: str) -> bool:
        """Whether BuildKit leaves this context-relative POSIX path out of the context."""
        parent = posixpath.dirname(path)
        parts = parent.split("/") if parent else []
        parents = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        matched = False
        for rule in self._rules:
            if rule.exception != matched:
                continue
            if rule.matches(path) or any(rule.matches(p) for p in parents):
                matched = not rule.exception
        return matched
