"""Byte-exact YAML edits: ruamel.yaml locates the scalars, the text is spliced, every other byte stays."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from release.errors import ConfigError, GuardRefusal

_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"
_SEGMENT = re.compile(r'"([^"]+)"|([^."]+)')

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


def parse_path(path: str) -> tuple[str, ...]:
    """Split a dotted key path; a segment holding dots is written in double quotes (`a."b.c"`)."""
    parts: list[str] = []
    position = 0
    while position <= len(path):
        match = _SEGMENT.match(path, position)
        if not match:
            raise ConfigError(f"key path {path!r} is malformed (want dotted keys, e.g. image.tag)")
        parts.append(match.group(1) or match.group(2))
        position = match.end()
        if position == len(path):
            return tuple(parts)
        if path[position] != ".":
            raise ConfigError(f"key path {path!r} is malformed (want dotted keys, e.g. image.tag)")
        position += 1
    raise ConfigError(f"key path {path!r} is malformed (ends with a dot)")


def _compose(text: str, source: str) -> list[Any]:
    """Every document's node tree; unparseable YAML is a ConfigError naming the line."""
    from ruamel.yaml.error import YAMLError

    try:
        docs = _composed(text)
        _load(text)  # constructing finds what composing does not (a duplicate key)
        return docs
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}:{where}: not valid YAML: {problem}") from None


@functools.lru_cache(maxsize=32)
def _composed(text: str) -> list[Any]:
    """The node trees of `text`, parsed once: a plan reads, edits and verifies the same text (nodes are never changed)."""
    from ruamel.yaml import YAML

    return [doc for doc in YAML(typ="rt").compose_all(text) if doc is not None]


def _load(text: str) -> list[Any]:
    """Every document as plain data (merge keys resolved); a fresh copy the caller may change."""
    return copy.deepcopy(_loaded(text))


@functools.lru_cache(maxsize=64)
def _loaded(text: str) -> list[Any]:
    """The documents of `text` as plain data, constructed once (never handed out: `_load` copies)."""
    from ruamel.yaml import YAML

    return list(YAML(typ="safe", pure=True).load_all(text))


def _find(doc: Any, parts: tuple[str, ...], path: str, source: str, index: int, text: str) -> Located | None:
    """The scalar at `parts` in one document, None if a key is missing; a ConfigError if it cannot be edited."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode

    node = doc
    flow = False
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        if not isinstance(node, MappingNode):
            raise ConfigError(f"{source}: {path}: {'.'.join(parts[:depth]) or 'the document'} is not a mapping")
        flow = flow or bool(node.flow_style)
        found = [(key, value) for key, value in node.value if isinstance(key, ScalarNode) and key.value == part]
        if not found:
            if any(isinstance(key, ScalarNode) and key.tag == "tag:yaml.org,2002:merge" for key, _ in node.value):
                raise ConfigError(
                    f"{source}: {path}: {where} is reached through a merge key (<<); edit it at its anchor"
                )
            return None
        if len(found) > 1:
            raise ConfigError(f"{source}: {path}: {where} appears more than once")
        key, node = found[0]
        if getattr(node, "anchor", None) is not None:
            if node.start_mark.index < key.start_mark.index:
                raise ConfigError(f"{source}: {path}: {where} is reached through an alias (*{node.anchor})")
            raise ConfigError(f"{source}: {path}: {where} carries an anchor (&{node.anchor}); aliases would change too")
    if not isinstance(node, ScalarNode):
        raise ConfigError(f"{source}: {path}: the value is a {type(node).__name__[:-4].lower()}, not a scalar")
    if node.style in ("|", ">"):
        raise ConfigError(f"{source}: {path}: the value is a block scalar ({node.style}), not a one-line scalar")
    start, end = node.start_mark.index, node.end_mark.index
    span = text[start:end]
    if span.startswith("!"):
        raise ConfigError(f"{source}: {path}: the value carries an explicit tag ({span.split()[0]})")
    if "\n" in span or "\r" in span:
        raise ConfigError(f"{source}: {path}: the value spans several lines")
    if start == end:
        start = end = _after_colon(text, key.end_mark.index, path, source)
    value = None if node.tag == _NULL_TAG else str(node.value)
    return Located(path, start, end, node.style, value, flow, index)


def _after_colon(text: str, position: int, path: str, source: str) -> int:
    """The index just after the `:` that follows a key ending at `position` (for an empty value)."""
    colon = text.find(":", position)
    if colon < 0 or text[position:colon].strip():
        raise ConfigError(f"{source}: {path}: cannot locate the value of an empty key")
    return colon + 1


def locate(text: str, paths: list[str], *, source: str = "<text>") -> dict[str, Located]:
    """Find each key path's scalar; ConfigError if missing, ambiguous across documents or not editable."""
    docs = _compose(text, source)
    result: dict[str, Located] = {}
    for path in paths:
        parts = parse_path(path)
        hits = [hit for i, doc in enumerate(docs) if (hit := _find(doc, parts, path, source, i, text)) is not None]
        if not hits:
            raise ConfigError(f"{source}: {path}: key not found")
        if len(hits) > 1:
            raise ConfigError(f"{source}: {path}: found in {len(hits)} YAML documents; the target is ambiguous")
        result[path] = hits[0]
    return result


def read_values(text: str, paths: list[str], *, source: str = "<text>") -> dict[str, str | None]:
    """The current value at each key path (None for a null)."""
    return {path: hit.value for path, hit in locate(text, paths, source=source).items()}


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


def _set(data: Any, parts: tuple[str, ...], value: str) -> None:
    for part in parts[:-1]:
        data = data[part]
    data[parts[-1]] = value


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
    """Re-parse the edited text: the new values read back and every other value is unchanged."""
    from ruamel.yaml.error import YAMLError

    expected = _load(before)
    for path, hit in found.items():
        _set(expected[hit.document], parse_path(path), edits[path][1])
    try:
        actual = _load(after)
    except YAMLError as err:
        raise ConfigError(f"{source}: the edit would make the file unparseable: {err}") from None
    if actual != expected:
        raise ConfigError(f"{source}: the edit did not read back as expected; nothing written")
