"""Byte-exact YAML edits: the parser's events locate the scalars, the text is spliced, every other byte stays.

One pass over the parse events (libyaml's C parser when ruamel.yaml.clib is installed) finds every key path
asked for and notes what would make it uneditable; nothing is composed or constructed, so the work is linear in
the file's size and an alias is never expanded. The edit is verified by parsing the result: the same events,
except the edited scalars, which hold the new values.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from release.errors import ConfigError, GuardRefusal
from release.keypath import parse_path

MAX_DEPTH = 100
_NULLS = frozenset(["", "~", "null", "Null", "NULL"])

Edits = Mapping[str, tuple[str | None, str]]


@dataclass(frozen=True)
class Located:
    """A scalar found at a key path: its text span, quote style and current value."""

    path: str
    start: int
    end: int
    style: str | None
    value: str | None
    flow: bool
    document: int
    event: int = -1  # its position in the file's event stream


def _events(text: str, pure: bool) -> tuple[Iterator[Any], int]:
    """The events of `text` (libyaml's C parser if installed, unless `pure`) and the offset their indexes need.

    libyaml does not count a byte-order mark: its mark indexes are one short of indexes into `text` then.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.parser import Parser

    yaml = YAML(typ="safe", pure=pure)
    offset = 1 if text.startswith("\ufeff") and yaml.Parser is not Parser else 0
    return iter(yaml.parse(text)), offset


def _syntax_error(err: Any, source: str) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    where = f" line {mark.line + 1}:" if mark else ""
    problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
    return ConfigError(f"{source}:{where} not valid YAML: {problem}")


@functools.cache
def _signer() -> Callable[[Any], tuple[Any, ...]]:
    """A function giving what an event says, positions aside: equal signatures mean the same data, written alike."""
    from ruamel.yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent

    def signature(event: Any) -> tuple[Any, ...]:
        kind = type(event)
        if kind is ScalarEvent:  # the most frequent by far; it starts with a string, the others with a class
            return (event.value, event.style or None, event.implicit, event.anchor, event.tag)
        if kind is MappingStartEvent or kind is SequenceStartEvent:
            return (kind, event.anchor, event.tag, event.flow_style)
        if kind is AliasEvent:
            return (kind, event.anchor)
        return (kind,)

    return signature


@dataclass
class _Frame:
    """An open mapping or sequence while the events are walked."""

    mapping: bool
    path: tuple[str, ...] | None  # its key path when it lies on the way to a wanted path, else None
    flow: bool
    expect_key: bool = True
    key: str | None = None
    key_end: int = 0
    merge: bool = False
    keys: set[str] = field(default_factory=set)


@dataclass
class _Scan:
    """Every hit (one per document) and the first problem of each wanted path, plus the event signatures."""

    hits: dict[tuple[str, ...], list[Located]]
    problems: dict[tuple[str, ...], str]
    signatures: list[tuple[Any, ...]]
    pure: bool  # read by the pure-Python parser (libyaml refused the text): the verification parses alike


def _dotted(parts: tuple[str, ...]) -> str:
    return ".".join(f'"{part}"' if "." in part else part for part in parts) or "the document"


@functools.lru_cache(maxsize=8)
def _scan(text: str, wanted: tuple[tuple[str, ...], ...], source: str) -> _Scan:
    """Walk the events of `text` once; ConfigError for YAML that does not parse, nests too deep or repeats a key."""
    from ruamel.yaml.error import YAMLError

    try:
        return _walk(text, wanted, source, pure=False)
    except (YAMLError, AssertionError):
        pass  # libyaml refused it: ask the pure-Python parser, which read values files before (and names the line)
    try:
        return _walk(text, wanted, source, pure=True)
    except (YAMLError, AssertionError) as err:  # ruamel.yaml asserts on some directives (`%YAML 1.3`)
        raise _syntax_error(err, source) from None


def _walk(text: str, wanted: tuple[tuple[str, ...], ...], source: str, *, pure: bool) -> _Scan:
    """One pass over the events of `text` (by the C parser unless `pure`); a YAMLError if it does not parse."""
    from ruamel.yaml.events import (
        CollectionEndEvent,
        DocumentStartEvent,
        MappingStartEvent,
        NodeEvent,
        ScalarEvent,
        SequenceStartEvent,
    )

    exact = set(wanted)
    prefixes = {path[:depth] for path in wanted for depth in range(len(path))}
    hits: dict[tuple[str, ...], list[Located]] = {path: [] for path in wanted}
    problems: dict[tuple[str, ...], str] = {}
    signatures: list[tuple[Any, ...]] = []
    stack: list[_Frame] = []
    document = -1
    signature = _signer()

    def problem(below: tuple[str, ...], message: str) -> None:
        for path in wanted:
            if path[: len(below)] == below:
                problems.setdefault(path, message)

    events, offset = _events(text, pure)
    for index, event in enumerate(events):
        signatures.append(signature(event))
        if isinstance(event, CollectionEndEvent):
            done = stack.pop()
            if done.merge and done.path is not None:
                for missing in _missing_below(done.path, done.keys, wanted):
                    problems.setdefault(
                        missing,
                        f"{_dotted(missing[: len(done.path) + 1])} is reached through a merge key (<<); "
                        "edit it at its anchor",
                    )
            continue
        if isinstance(event, DocumentStartEvent):
            document += 1
            continue
        if not isinstance(event, NodeEvent):
            continue
        parent = stack[-1] if stack else None
        if parent is not None and parent.mapping and parent.expect_key:
            parent.expect_key = False
            parent.key = None
            if isinstance(event, ScalarEvent):
                if event.value in parent.keys:  # `1` and `"1"` too: they are one key once Helm has read them
                    raise ConfigError(
                        f"{source}: line {event.start_mark.line + 1}: not valid YAML: "
                        f"found duplicate key {_short(event.value)}"
                    )
                parent.keys.add(event.value)
                parent.key, parent.key_end = event.value, event.end_mark.index + offset
                parent.merge = parent.merge or (not event.style and event.value == "<<")
            elif isinstance(event, MappingStartEvent | SequenceStartEvent):  # a complex key: walked, never a path
                stack.append(_Frame(isinstance(event, MappingStartEvent), None, True))
                _check_depth(stack, event, source)
            continue
        at: tuple[str, ...] | None = None
        if parent is None:
            at = ()
        elif parent.mapping:
            parent.expect_key = True
            if parent.path is not None and parent.key is not None:
                at = (*parent.path, parent.key)
        if at is not None and at not in prefixes and at not in exact:
            at = None
        if at is not None:
            message = _problem(text, event, offset, at, at in exact)
            if message is not None:
                problem(at, message)
            elif at in exact and parent is not None:
                hits[at].append(_located(text, event, offset, at, parent, document, index, source))
        if isinstance(event, MappingStartEvent | SequenceStartEvent):
            mapping = isinstance(event, MappingStartEvent)
            flow = bool(event.flow_style) or bool(parent and parent.flow)
            stack.append(_Frame(mapping, at if mapping else None, flow))
            _check_depth(stack, event, source)
    return _Scan(hits, problems, signatures, pure)


def _check_depth(stack: list[_Frame], event: Any, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH (no values file needs it; deeper is a mistake or an attack)."""
    if len(stack) > MAX_DEPTH:
        raise ConfigError(f"{source}: line {event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")


def _missing_below(at: tuple[str, ...], keys: set[str], wanted: tuple[tuple[str, ...], ...]) -> list[tuple[str, ...]]:
    """The wanted paths that go through the mapping at `at` by a key it does not hold."""
    return [path for path in wanted if len(path) > len(at) and path[: len(at)] == at and path[len(at)] not in keys]


def _short(value: str, limit: int = 60) -> str:
    """`value` quoted, cut short when long."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _problem(text: str, event: Any, offset: int, path: tuple[str, ...], exact: bool) -> str | None:
    """Why the node of `event`, found at `path`, cannot be edited (or lead to a wanted key); None if it can."""
    from ruamel.yaml.events import AliasEvent, MappingStartEvent, ScalarEvent

    where = _dotted(path)
    if isinstance(event, AliasEvent):
        return f"{where} is reached through an alias (*{event.anchor})"
    if event.anchor is not None:
        return f"{where} carries an anchor (&{event.anchor}); aliases would change too"
    if not exact:
        if isinstance(event, MappingStartEvent):
            return None
        if not path and isinstance(event, ScalarEvent) and not event.style and event.value in _NULLS:
            return None  # an empty document: nothing to find in it
        return f"{where} is not a mapping"
    if not isinstance(event, ScalarEvent):
        kind = "mapping" if isinstance(event, MappingStartEvent) else "sequence"
        return f"the value is a {kind}, not a scalar"
    if event.style in ("|", ">"):
        return f"the value is a block scalar ({event.style}), not a one-line scalar"
    if event.tag is not None:
        return f"the value carries an explicit tag ({event.tag})"
    span = text[event.start_mark.index + offset : event.end_mark.index + offset]
    if "\n" in span or "\r" in span:
        return "the value spans several lines"
    return None


def _located(
    text: str, event: Any, offset: int, path: tuple[str, ...], parent: _Frame, document: int, index: int, source: str
) -> Located:
    """The hit of an editable scalar event."""
    dotted = ".".join(f'"{part}"' if "." in part else part for part in path)
    start, end = event.start_mark.index + offset, event.end_mark.index + offset
    if start == end:
        start = end = _after_colon(text, parent.key_end, dotted, source)
    style = event.style or None
    value = None if style is None and event.value in _NULLS else str(event.value)
    return Located(dotted, start, end, style, value, parent.flow, document, index)


def _after_colon(text: str, position: int, path: str, source: str) -> int:
    """The index just after the `:` that follows a key ending at `position` (for an empty value)."""
    colon = text.find(":", position)
    if colon < 0 or text[position:colon].strip():
        raise ConfigError(f"{source}: {path}: cannot locate the value of an empty key")
    return colon + 1


def locate(text: str, paths: list[str], *, source: str = "<text>") -> dict[str, Located]:
    """Find each key path's scalar; ConfigError if missing, ambiguous across documents or not editable."""
    parsed = {path: parse_path(path) for path in paths}
    scan = _scan(text, tuple(sorted(set(parsed.values()))), source)
    result: dict[str, Located] = {}
    for path, parts in parsed.items():
        if parts in scan.problems:
            raise ConfigError(f"{source}: {path}: {scan.problems[parts]}")
        hits = scan.hits[parts]
        if not hits:
            raise ConfigError(f"{source}: {path}: key not found")
        if len(hits) > 1:
            raise ConfigError(f"{source}: {path}: found in {len(hits)} YAML documents; the target is ambiguous")
        result[path] = Located(
            path, *(getattr(hits[0], name) for name in ("start", "end", "style", "value", "flow", "document", "event"))
        )
    return result


def read_values(text: str, paths: list[str], *, source: str = "<text>") -> dict[str, str | None]:
    """The current value at each key path (None for a null)."""
    return {path: hit.value for path, hit in locate(text, paths, source=source).items()}


def _load(text: str) -> list[Any]:
    """Every document of a (small) text as plain data; a fresh copy the caller may change."""
    return copy.deepcopy(_loaded(text))


@functools.lru_cache(maxsize=64)
def _loaded(text: str) -> list[Any]:
    """The documents of `text` as plain data, constructed once (never handed out: `_load` copies)."""
    from ruamel.yaml import YAML

    return list(YAML(typ="safe", pure=True).load_all(text))


def _plain_ok(value: str, flow: bool) -> bool:
    """Whether `value` written plain reads back as the same string in that context."""
    from ruamel.yaml.error import YAMLError

    if not value or value != value.strip() or any(c in value for c in "#\n\r\t'\"") or value[0] in "!&*%@`|>{}[],?-:":
        return False
    probe = f"[{value}]\n" if flow else f"k: {value}\n"
    try:
        data = _load(probe)[0]
    except YAMLError:
        return False
    got = data[0] if flow else data.get("k")
    return isinstance(got, str) and got == value


def render_scalar(value: str, style: str | None, flow: bool) -> str:
    """`value` written in `style` (plain, '…' or "…"); plain falls back to "…" if it would not read back."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style is None and _plain_ok(value, flow):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return f'"{escaped}"'


def replace_values(text: str, edits: Edits, *, source: str = "<text>") -> str:
    """Write each edit's new value at its key path; `expected_old` (if not None) must match (else GuardRefusal)."""
    found = locate(text, list(edits), source=source)
    for path, (expected, _new) in edits.items():
        if expected is not None and found[path].value != expected:
            raise GuardRefusal(
                f"{source}: {path}: holds {found[path].value!r}, expected {expected!r} (compare-and-swap refused)"
            )
    spans = sorted(found.values(), key=lambda hit: hit.start)
    pieces: list[str] = []
    cursor = 0
    for hit in spans:
        new = edits[hit.path][1]
        rendered = render_scalar(new, hit.style, hit.flow)
        if hit.start == hit.end:
            rendered = " " + rendered
        pieces += [text[cursor : hit.start], rendered]
        cursor = hit.end
    pieces.append(text[cursor:])
    result = "".join(pieces)
    _verify(text, result, found, edits, source)
    return result


def _verify(before: str, after: str, found: dict[str, Located], edits: Edits, source: str) -> None:
    """Parse the edited text: every event as before, except the edited scalars, which hold their new values."""
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.events import ScalarEvent

    wanted = tuple(sorted({parse_path(path) for path in found}))
    scan = _scan(before, wanted, source)
    signatures = scan.signatures
    edited = {hit.event: (edits[path][1], hit.flow) for path, hit in found.items()}
    signature = _signer()
    count = 0
    try:
        for index, event in enumerate(_events(after, scan.pure)[0]):
            count += 1
            if index in edited:
                new, flow = edited[index]
                same = (
                    isinstance(event, ScalarEvent)
                    and event.value == new
                    and event.anchor is None
                    and event.tag is None
                    and (bool(event.style) or _plain_ok(new, flow))
                )
            else:
                same = index < len(signatures) and signature(event) == signatures[index]
            if not same:
                raise ConfigError(f"{source}: the edit did not read back as expected; nothing written")
    except (YAMLError, AssertionError) as err:
        problem = str(_syntax_error(err, source)).removeprefix(f"{source}:").strip()
        raise ConfigError(f"{source}: the edit would make the file unparseable ({problem}); nothing written") from None
    if count != len(signatures):
        raise ConfigError(f"{source}: the edit did not read back as expected; nothing written")
