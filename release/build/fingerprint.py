"""A build's inputs as one digest: the context files BuildKit sends, the Dockerfile's base images, the command."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import posixpath
import re
import shlex
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

FINGERPRINT_VERSION = 1
_CHUNK = 1 << 20


class Unknowable(Exception):
    """The inputs cannot be told from the files alone (the build runs instead); the message says why, in one line."""


# --- .dockerignore: moby's ignorefile.ReadAll and patternmatcher ---------------------------------------------------


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


# --- the context as BuildKit sends it ------------------------------------------------------------------------------


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


# --- the Dockerfile's images: BuildKit's parser, as far as image references go ------------------------------------

_DIRECTIVE = re.compile(r"^(?:#|//)\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_HEREDOC = re.compile(r"^[0-9]*<<(-?)([^<]*)$")
_HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(rf"\$(?:({_NAME})|\{{({_NAME})(?:(:?[-+])((?:[^{{}}]|\{{[^{{}}]*\}})*))?\}})")
_REMOTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|git@")


def _directives(lines: list[str]) -> dict[str, str]:
    """The parser directives at the top of the Dockerfile (lower-case names), up to the first other line."""
    found: dict[str, str] = {}
    for line in lines:
        match = _DIRECTIVE.match(line.rstrip("\r\n").lstrip())
        if not match or match[1].lower() not in _KNOWN_DIRECTIVES:
            break
        name = match[1].lower()
        if name in found:
            raise Unknowable(f"the Dockerfile sets the {name} directive twice")
        found[name] = match[2]
    return found


def _heredoc_names(line: str) -> list[tuple[str, bool]]:
    """(terminator, strip leading tabs) of each heredoc a RUN, COPY or ADD line opens, in order."""
    try:
        lexer = shlex.shlex(line, posix=False)
        lexer.whitespace_split = True
        lexer.commenters = ""
        words = list(lexer)
    except ValueError:
        words = line.split()
    docs = []
    for word in words:
        match = _HEREDOC.match(word)
        if not match:
            continue
        try:
            name = shlex.split(match[2])
        except ValueError:
            continue
        if len(name) == 1:
            docs.append((name[0], match[1] == "-"))
    return docs


class _Lines:
    """The Dockerfile's lines read as BuildKit's parser reads them: continuations joined, comments and heredocs skipped."""

    def __init__(self, lines: list[str], escape: str) -> None:
        """Start at the first line; `escape` is the line-continuation character."""
        self._lines = lines
        self._at = 0
        self._continuation = re.compile(re.escape(escape) + r"[ \t]*$")

    def _next(self) -> str | None:
        """The next physical line without its newline, or None at the end."""
        if self._at >= len(self._lines):
            return None
        self._at += 1
        return self._lines[self._at - 1].rstrip("\r\n")

    def _trim(self, line: str) -> tuple[str, bool]:
        """The line without a trailing continuation character, and whether the instruction ends here."""
        match = self._continuation.search(line)
        return (line[: match.start()], False) if match else (line, True)

    def _rest_of(self, line: str) -> str:
        """The continuation lines of an instruction joined to its first line."""
        done = False
        while not done and (raw := self._next()) is not None:
            if raw.lstrip().startswith("#") or not raw.strip():
                continue
            part, done = self._trim(raw)
            line += part
        return line

    def _skip_heredocs(self, line: str) -> None:
        """Skip the bodies of the heredocs the instruction opens, up to each terminator line."""
        for name, chomp in _heredoc_names(line):
            while (raw := self._next()) is not None:
                if (raw.lstrip("\t") if chomp else raw) == name:
                    break

    def instructions(self) -> Iterator[tuple[str, str]]:
        """(lower-case keyword, the rest of the line) of each instruction in order."""
        while (raw := self._next()) is not None:
            line = raw.lstrip()
            if line.startswith("#"):
                continue
            line, done = self._trim(line)
            if done and not line:
                continue
            if not done:
                line = self._rest_of(line)
            keyword, rest = [*line.split(None, 1), ""][:2]
            keyword, rest = keyword.lower(), rest.strip()
            inner = (rest.split(None, 1) or [""])[0].lower() if keyword == "onbuild" else keyword
            if inner in _HEREDOC_INSTRUCTIONS and "<<" in line:
                self._skip_heredocs(line)
            yield keyword, rest


def _words(rest: str, flags_only: bool = False) -> tuple[list[str], list[str]]:
    """The leading `--flag=value` words of an instruction and the words after them, quotes removed."""
    lexer = shlex.shlex(rest, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    flags: list[str] = []
    args: list[str] = []
    try:
        for word in lexer:
            if not args and word.startswith("--"):
                flags.append(word)
                continue
            args.append(word)
            if flags_only:
                break
    except ValueError as err:
        if not flags_only:
            raise Unknowable(f"{rest}: cannot split into words: {err}") from err
    return flags, args


class _Undefined(Exception):
    """A variable whose value the files do not tell."""


def _expand(word: str, env: Mapping[str, str | None]) -> str:
    """`word` with $NAME, ${NAME} and ${NAME:-w}, ${NAME-w}, ${NAME:+w}, ${NAME+w} substituted from declared ARGs."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in env:
            raise _Undefined(name)
        current = env[name]
        operator, alternative = match[3], match[4] or ""
        if operator is None:
            return current or ""
        present = current is not None and (current != "" or not operator.startswith(":"))
        if operator.endswith("-"):
            return current if present and current is not None else _expand(alternative, env)
        return _expand(alternative, env) if present else ""

    return _VARIABLE.sub(value, word)


def _global_args(rest: str, env: dict[str, str | None], build_args: Mapping[str, str]) -> None:
    """Declare the names of a global ARG line in `env`: a build argument wins over the default."""
    _, words = _words(rest)
    for word in words:
        name, equals, default = word.partition("=")
        if name in build_args:
            env[name] = build_args[name]
            continue
        if not equals:
            env[name] = None
            continue
        try:
            env[name] = _expand(default, env)
        except _Undefined:
            env.pop(name, None)  # unknown: any use of it makes the image unknowable


def _mount_sources(flags: list[str]) -> list[str]:
    """The `from=` values of a RUN's --mount flags."""
    sources = []
    for flag in flags:
        name, _, value = flag[2:].partition("=")
        if name.lower() != "mount":
            continue
        for field in next(csv.reader([value]), []):
            key, _, source = field.partition("=")
            if key.strip().lower() == "from":
                sources.append(source)
    return sources


def _copy_sources(flags: list[str]) -> list[str]:
    """The `--from=` value of a COPY, if any."""
    return [flag.partition("=")[2] for flag in flags if flag.partition("=")[0].lower() == "--from"]


@dataclass
class _Images:
    """The walk through a Dockerfile's instructions, collecting the images it reads."""

    stage_names: frozenset[str]
    stage_count: int
    build_args: Mapping[str, str]
    found: list[str]

    def add(self, image: str) -> None:
        """Record an external image once, in order of first appearance."""
        if image not in self.found:
            self.found.append(image)

    def stage_source(self, keyword: str, source: str) -> None:
        """Record a `--from` source unless it names a stage of this file (by name or index)."""
        if "$" in source or not source:
            raise Unknowable(f"{keyword.upper()} --from={source}: cannot tell which image it names")
        lowered = source.lower()
        if lowered in self.stage_names or (re.fullmatch(r"[0-9]+", source) and int(source) < self.stage_count):
            return
        self.add(source)


def _from_image(rest: str, env: Mapping[str, str | None], earlier: set[str]) -> tuple[str | None, str | None]:
    """(external image or None, stage name or None) of a FROM line."""
    _, words = _words(rest)
    if not words:
        raise Unknowable(f"FROM {rest}: cannot tell which image it names")
    raw = words[0]
    name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
    try:
        image = _expand(raw, env)
    except _Undefined as err:
        raise Unknowable(f"FROM {raw}: cannot tell which image it names") from err
    if not image or "$" in image:
        raise Unknowable(f"FROM {raw}: cannot tell which image it names")
    if image.lower() in earlier or image == "scratch":
        return None, name
    return image, name


def _stage_names(instructions: list[tuple[str, str]]) -> tuple[frozenset[str], int]:
    """The lower-case names of all the file's stages, and how many stages it has."""
    names, count = set(), 0
    for keyword, rest in instructions:
        if keyword == "from":
            count += 1
            _, words = _words(rest, flags_only=False) if rest else ([], [])
            if len(words) >= 3 and words[1].lower() == "as":
                names.add(words[2].lower())
    return frozenset(names), count


def _syntax_images(directives: Mapping[str, str], build_args: Mapping[str, str]) -> list[str]:
    """The frontend images: BUILDKIT_SYNTAX (which wins) and the `# syntax=` directive."""
    values = [build_args.get("BUILDKIT_SYNTAX", ""), directives.get("syntax", "")]
    return [value.strip().split(" ", 1)[0] for value in values if value.strip()]


def _instruction(walk: _Images, keyword: str, rest: str) -> None:
    """Record the external sources of one instruction inside a stage."""
    if keyword == "copy":
        for source in _copy_sources(_words(rest, flags_only=True)[0]):
            walk.stage_source(keyword, source)
    elif keyword == "run":
        for source in _mount_sources(_words(rest, flags_only=True)[0]):
            walk.stage_source(keyword, source)
    elif keyword == "add" and _REMOTE.search(rest):
        raise Unknowable(f"ADD {rest}: a remote source is not in the files")


def external_images(dockerfile_text: str, build_args: Mapping[str, str]) -> tuple[str, ...]:
    """The image references the build reads that are not its own stages (FROM, --from, RUN --mount from=, # syntax=)."""
    lines = dockerfile_text.removeprefix("\ufeff").split("\n")
    directives = _directives(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise Unknowable(f"escape={escape}: BuildKit accepts only \\ or `")
    instructions = list(_Lines(lines, escape).instructions())
    names, count = _stage_names(instructions)
    walk = _Images(names, count, build_args, [])
    for frontend in _syntax_images(directives, build_args):
        walk.add(frontend)
    env: dict[str, str | None] = {}
    earlier: set[str] = set()
    in_stage = False
    for keyword, rest in instructions:
        if keyword == "from":
            in_stage = True
            image, name = _from_image(rest, env, earlier)
            if image:
                walk.add(image)
            if name:
                earlier.add(name)
        elif keyword == "arg" and not in_stage:
            _global_args(rest, env, build_args)
        elif in_stage:
            _instruction(walk, keyword, rest)
    return tuple(walk.found)


# --- the digest of all the parts -----------------------------------------------------------------------------------


def fingerprint(parts: Mapping[str, object]) -> str:
    """sha256 hex of the parts as canonical JSON (sorted keys), with this module's FINGERPRINT_VERSION."""
    document = {"version": FINGERPRINT_VERSION, **parts}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = [
    "FINGERPRINT_VERSION",
    "IgnoreRules",
    "Unknowable",
    "context_digest",
    "external_images",
    "fingerprint",
    "ignore_patterns",
]
