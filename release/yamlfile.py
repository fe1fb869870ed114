"""Read configuration files: regular UTF-8 files of plain YAML, every problem a one-line ConfigError."""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Any

from release.errors import ConfigError

MAX_DEPTH = 100  # mappings and sequences nested deeper than this are refused (no configuration needs more)
SHOWN = 60  # characters of a value an error message shows at most
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 3, 3, 3, 3
_REPR.maxstring = _REPR.maxother = SHOWN
_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket"}


def shown(value: Any, limit: int = SHOWN) -> str:
    """`repr(value)` cut to at most about `limit` characters, however large or nested the value."""
    text = _REPR.repr(value)
    return text if len(text) <= limit + 5 else text[:limit] + "…"


def field_path(loc: tuple[Any, ...]) -> str:
    """A dotted field path for a message: long or odd keys cut short and quoted, so the message stays one line."""
    parts = [str(part) if str(part).isprintable() and len(str(part)) <= 40 else shown(str(part), 40) for part in loc]
    return ".".join(parts) or "(top level)"


def one_line(text: str, limit: int = 200) -> str:
    """`text` with control characters escaped, cut to about `limit` characters: safe inside a one-line message."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return flat if len(flat) <= limit else flat[:limit] + "…"


def read_text(path: Path, what: str, *, errors: str = "strict") -> str:
    """The text of a regular UTF-8 file; a FIFO, device or folder is refused at once, never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO with no writer: no wait
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what}: {err.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "a device or special file")
            raise ConfigError(f"{path}: the {what} is {kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what}: {err.strerror}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}: line {line}: the {what} is not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})"
        ) from None


def _strict_composer() -> type[Any]:
    """A ruamel.yaml composer that refuses anchors and aliases: no value is defined in one place and used in another."""
    from ruamel.yaml.composer import Composer, ComposerError
    from ruamel.yaml.events import AliasEvent

    class StrictComposer(Composer):
        """Compose as usual, but stop at the first anchor or alias."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            """Refuse an alias or an anchored node, then compose it."""
            event = self.parser.peek_event()
            if isinstance(event, AliasEvent) or event.anchor is not None:
                sign = "*" if isinstance(event, AliasEvent) else "&"
                raise ComposerError(
                    None,
                    None,
                    f"{'an alias' if sign == '*' else 'an anchor'} ({sign}{shown(event.anchor, 20)[1:-1]}): "
                    "anchors and aliases are not allowed here; write each value out",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

    return StrictComposer


def read_yaml(path: Path, what: str) -> Any:
    """Load `path` (safe loader, no anchors or aliases, at most MAX_DEPTH levels); errors name the file and line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    text = read_text(path, what)
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = _strict_composer()
    yaml.max_depth = MAX_DEPTH
    try:
        return yaml.load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = str(getattr(err, "problem", None) or err).splitlines()[0]
        if "maximum depth" in problem:
            problem = f"nested deeper than {MAX_DEPTH} levels"
        elif "anchors and aliases" not in problem:
            problem = f"not valid YAML: {problem}"
        raise ConfigError(f"{path}:{where} {problem}") from None
    except AssertionError as err:  # ruamel.yaml asserts on some directives (`%YAML 1.3`)
        raise ConfigError(f"{path}: not valid YAML: {one_line(str(err))}") from None
    except RecursionError:  # a nesting the depth limit did not catch (it should): still one line
        raise ConfigError(f"{path}: nested too deeply to read") from None
