"""The images a Dockerfile reads that are not its own stages, found as BuildKit's parser finds them."""

from __future__ import annotations

import csv
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from release.errors import Unknowable

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
