"""BuildKit progress: read buildx's rawjson stream, echo it as plain lines, count cached steps."""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TextIO

_DECODER = json.JSONDecoder()
_MAX_BUFFER = 4 * 1024 * 1024
# Dockerfile instruction vertices look like `[base 2/3] RUN …` or `[2/3] COPY …`.
_STEP = re.compile(r"^\[(?:[^\]]*\s)?\d+/\d+\]\s+(?P<instruction>[A-Z]+)")


def _seconds(started: str | None, completed: str | None) -> float | None:
    if not started or not completed:
        return None
    try:
        return (datetime.fromisoformat(completed) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None


_CACHE_STEP = re.compile(r"^(importing cache manifest from|exporting cache to|preparing build cache for export)")
_CACHE_EXPORT = re.compile(r"^exporting cache to ")
# BuildKit's image exporter, once the index is in the registry: `pushing manifest for <name>:<tag>@sha256:…`.
_PUSHED = re.compile(r"^pushing manifest for (?P<name>\S+)@(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass
class Vertex:
    """One vertex of the build graph as last reported."""

    digest: str
    name: str
    number: int
    started: str | None = None
    completed: str | None = None
    cached: bool = False
    error: str | None = None
    progressed_at: float | None = None  # when (time.monotonic) it last reported anything: state, status or log
    began_at: float | None = None  # when (time.monotonic) it was first seen started
    statuses: dict[str, tuple[object, object]] = field(default_factory=dict)

    @property
    def is_cache_step(self) -> bool:
        """A registry cache import or export step (BuildKit gives these no timeout of its own)."""
        return bool(_CACHE_STEP.match(self.name))

    @property
    def is_step(self) -> bool:
        """An executed Dockerfile instruction: not internal work, and not FROM (a source, never executed)."""
        match = _STEP.match(self.name)
        return match is not None and match.group("instruction") != "FROM"


Mode = Literal["auto", "plain", "tty"]


def board_for(mode: Mode, stream: TextIO, *, in_ci: bool, term: str | None) -> LiveBoard | None:
    """A live board at a terminal (progress tty, or auto at a terminal outside CI); None for plain lines."""
    tty = mode == "tty" or (mode == "auto" and stream.isatty() and not in_ci and term != "dumb")
    return LiveBoard(stream) if tty else None


class LiveBoard:
    """At a terminal: one status line per target, redrawn in place; other lines scroll above it."""

    def __init__(self, stream: TextIO) -> None:
        """Draw on `stream` (a terminal)."""
        self.stream = stream
        self.rows: dict[str, str] = {}
        self.drawn = 0
        self.lock = threading.Lock()

    def update(self, key: str, text: str) -> None:
        """Set the status line of `key` and redraw."""
        with self.lock:
            if self.rows.get(key) == text:
                return
            self.rows[key] = text
            self._clear()
            self._draw()

    def print(self, line: str) -> None:
        """A line that stays (a warning, a failing step's log), printed above the status lines."""
        with self.lock:
            self._clear()
            self.stream.write(line + "\n")
            self._draw()

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        for text in self.rows.values():
            self.stream.write(text[:width] + "\n")
        self.drawn = len(self.rows)
        self.stream.flush()


@dataclass
class ProgressTracker:
    """Consumes rawjson lines, echoes plain progress through `echo` (or a LiveBoard), and counts steps."""

    prefix: str
    echo: Callable[[str], None]
    board: LiveBoard | None = None
    vertices: dict[str, Vertex] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    buffer: str = ""
    logs: dict[str, list[str]] = field(default_factory=dict)
    pushed: dict[str, str] = field(default_factory=dict)  # image name:tag -> digest, from finished pushes
    on_cache_exported: Callable[[], None] | None = None  # called when a cache export step ends (done or failed)

    def feed(self, line: str) -> None:
        """Consume one line of buildx output; rawjson objects may span lines, other text is echoed."""
        if not self.buffer and not line.lstrip().startswith("{"):
            if line.strip():
                self.echo(f"{self.prefix} {line.rstrip()}")
            return
        self.buffer += line if line.endswith("\n") else line + "\n"
        while self.buffer.strip():
            text = self.buffer.lstrip()
            try:
                status, end = _DECODER.raw_decode(text)
            except ValueError:
                if len(self.buffer) > _MAX_BUFFER:
                    self.echo(f"{self.prefix} {self.buffer.strip()[:200]}")
                    self.buffer = ""
                return
            self.buffer = text[end:]
            if isinstance(status, dict):
                self._status(status)

    def _status(self, status: dict[str, Any]) -> None:
        now = time.monotonic()
        for raw in status.get("vertexes") or []:
            self._vertex(raw)
            seen = self.vertices[str(raw.get("digest", ""))]
            seen.progressed_at = now
            seen.began_at = seen.began_at or (now if seen.started else None)
        for raw in status.get("statuses") or []:
            self._progress(raw, now)
        for log in status.get("logs") or []:
            vertex = self.vertices.get(log.get("vertex", ""))
            if vertex is not None:
                vertex.progressed_at = now
            data = base64.b64decode(log.get("data") or "").decode(errors="replace")
            for piece in data.splitlines():
                line = f"{self.prefix} #{vertex.number if vertex else '?'} {piece}"
                if self.board is None:
                    self.echo(line)
                else:  # at a terminal, a step's output is shown only if the step fails
                    self.logs.setdefault(log.get("vertex", ""), []).append(line)
        if self.board is not None:
            self.board.update(self.prefix, self.status_line())

    def _vertex(self, raw: dict[str, object]) -> None:
        digest = str(raw.get("digest", ""))
        vertex = self.vertices.get(digest)
        if vertex is None:
            vertex = Vertex(digest, str(raw.get("name", "")), len(self.vertices) + 1)
            self.vertices[digest] = vertex
        vertex.started = str(raw["started"]) if raw.get("started") else vertex.started
        vertex.completed = str(raw["completed"]) if raw.get("completed") else vertex.completed
        vertex.cached = bool(raw.get("cached")) or vertex.cached
        vertex.error = str(raw["error"]) if raw.get("error") else vertex.error
        if digest not in self.announced and (vertex.started or vertex.cached):
            self.announced.add(digest)
            if self.board is None:
                self.echo(f"{self.prefix} #{vertex.number} {vertex.name}")
        if digest not in self.finished and (vertex.completed or vertex.error):
            self._finished(digest, vertex)

    def _finished(self, digest: str, vertex: Vertex) -> None:
        """A vertex has ended: its outcome is shown, and the end of a cache export is reported."""
        self.finished.add(digest)
        if vertex.error:
            outcome = f"ERROR {vertex.error}"
        elif vertex.cached:
            outcome = "CACHED"
        else:
            took = _seconds(vertex.started, vertex.completed)
            outcome = f"DONE {took:.1f}s" if took is not None else "DONE"
        if self.board is None:
            self.echo(f"{self.prefix} #{vertex.number} {outcome}")
        elif vertex.error:
            for line in [f"{self.prefix} #{vertex.number} {vertex.name}", *self.logs.pop(digest, [])]:
                self.board.print(line)
            self.board.print(f"{self.prefix} #{vertex.number} {outcome}")
        if self.on_cache_exported is not None and _CACHE_EXPORT.match(vertex.name):
            self.on_cache_exported()

    def _progress(self, raw: dict[str, Any], now: float) -> None:
        """A status of a vertex (`writing layer …`, `pushing manifest for …`): a change is progress of its vertex."""
        key = str(raw.get("id", ""))
        vertex = self.vertices.get(str(raw.get("vertex", "")))
        state = (raw.get("current"), raw.get("completed"))
        if vertex is not None and vertex.statuses.get(key) != state:
            vertex.statuses[key] = state
            vertex.progressed_at = now
        pushed = _PUSHED.match(key)
        if pushed and raw.get("completed"):
            self.pushed[pushed.group("name")] = pushed.group("digest")

    def status_line(self) -> str:
        """One line for the live board: steps done, cached, and what runs now."""
        steps = self.steps
        done = sum(1 for v in steps if v.completed or v.cached)
        cached = sum(1 for v in steps if v.cached)
        running = [v for v in self.vertices.values() if v.started and not v.completed and not v.error]
        now = f" · {running[-1].name}" if running else ""
        return f"{self.prefix} {done}/{len(steps)} steps, {cached} cached{now}"

    @property
    def steps(self) -> list[Vertex]:
        """The Dockerfile instruction vertices seen."""
        return [v for v in self.vertices.values() if v.is_step]

    @property
    def cache_hit_ratio(self) -> float | None:
        """Cached steps / all steps, or None when no step was seen."""
        steps = self.steps
        if not steps:
            return None
        return round(sum(1 for v in steps if v.cached) / len(steps), 4)

    def running_cache_steps(self) -> list[Vertex]:
        """The cache import/export steps started and not yet finished."""
        return [
            v
            for v in list(self.vertices.values())
            if v.is_cache_step and v.started and not v.completed and not v.error and v.progressed_at is not None
        ]

    def cache_quiet_s(self) -> float | None:
        """Seconds since the quietest running cache step last reported progress; None when none runs."""
        now = time.monotonic()
        quiet = [now - (v.progressed_at or now) for v in self.running_cache_steps()]
        return max(quiet) if quiet else None

    def cache_step_age_s(self) -> float | None:
        """Seconds the oldest running cache step has run; None when none runs."""
        now = time.monotonic()
        ages = [now - (v.began_at or now) for v in self.running_cache_steps()]
        return max(ages) if ages else None

    def crawling_cache_step(self, deadline_s: float, too_slow: Callable[[float], bool]) -> str | None:
        """The name of a cache step running longer than `deadline_s` whose bytes since it began were `too_slow`.

        `too_slow(began_at)` says whether the bytes moved since then average below the minimum rate; BuildKit's
        statuses do not save such a step (a crawl that finishes a small layer now and then is still a crawl).
        """
        now = time.monotonic()
        for vertex in self.running_cache_steps():
            began = vertex.began_at or now
            if now - began > deadline_s and too_slow(began):
                return vertex.name
        return None

    def stalled_cache_step(self, deadline_s: float, bytes_moved_at: float | None = None) -> str | None:
        """The name of a running cache step that made no progress for more than `deadline_s` seconds, if any.

        Progress is a new BuildKit status of the step (a layer started or written, a counter moved) or, at
        `bytes_moved_at` (time.monotonic), bytes moved on the connections to the cache host: BuildKit reports
        a layer's upload only when it starts and ends, however long it takes.
        """
        now = time.monotonic()
        for vertex in self.running_cache_steps():
            last = max(vertex.progressed_at or now, bytes_moved_at or 0.0)
            if now - last > deadline_s:
                return vertex.name
        return None

    def pushed_digest(self, tag: str) -> str | None:
        """The digest BuildKit reported pushing under `tag` (`pushing manifest for <tag>@<digest>`, finished), if any."""
        return self.pushed.get(tag)

    def cache_import_outcome(self) -> Literal["miss", "unavailable"] | None:
        """'unavailable' if every cache import failed, 'miss' if each found no cache yet; None if one worked or none ran."""
        imports = [v for v in self.vertices.values() if v.name.startswith("importing cache manifest from")]
        if not imports or any(not v.error for v in imports):
            return None
        return "miss" if all((v.error or "").rstrip().endswith("not found") for v in imports) else "unavailable"

    def cache_export_failed(self) -> bool:
        """True if a cache export vertex reported an error (ignored by ignore-error=true)."""
        return any("export" in v.name and "cache" in v.name and v.error for v in self.vertices.values())
