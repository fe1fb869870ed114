"""FakeBuildx: a fake of the BuildEngine port, so the whole release pipeline runs in unit tests without docker.

Each build replays a recorded buildx rawjson stream (tests/unit/rawjson/), "pushes" an image to a registry
stand-in (real HTTP, see tests/gitops/conftest.py) and writes the metadata file, as buildx does; a scripted
attempt can instead fail (a transient 502), hang in a cache step until the pipeline's deadline stops it, or
be interrupted (a real SIGINT or SIGTERM to the main thread, then it waits to be stopped).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from release.adapters.buildx import BuildRequest, CacheDeadlineExceeded
from release.errors import ConfigError, EngineError
from release.imageref import parse_image_ref

RECORDINGS = Path(__file__).resolve().parents[1] / "unit" / "rawjson"
STAMP = "2026-12-01T10:00:00.000000000Z"


class Registry(Protocol):
    """What the fake pushes to: a registry stand-in that stores an image and answers its digest."""

    def add_image(
        self, path: str, revision: str | None, salt: str = "", extra_labels: dict[str, str] | None = None
    ) -> str:
        """Store an image (its config carries the labels); its manifest digest."""


@dataclass(frozen=True)
class Attempt:
    """What one build attempt does, in this order: replay, push, then end as scripted."""

    recording: str | None = None  # a file of tests/unit/rawjson replayed as the build's progress
    push: bool = True  # push the image (reported as BuildKit does: `pushing manifest for <tag>@<digest>`)
    hang: str | None = None  # a cache step that starts and never moves, until the pipeline's deadline stops it
    interrupt: int | None = None  # a signal (SIGINT, SIGTERM) to the main thread; the build then waits to be stopped
    after: str | None = None  # start only once this target's build has ended (orders concurrent builds)
    fail: str | None = None  # buildx's last words when the build fails (an EngineError)
    metadata: bool = True  # write the metadata file (buildx stopped early writes none)
    hold: float = 0.0  # seconds the build stays under way after its progress (lets another build start meanwhile)
    drop: str | None = None  # a step left out of the recording (a build without it); a hung step's own is left out


def recording(name: str, without: str | None = None) -> list[str]:
    """The lines of a recorded rawjson stream; `without`: the steps of that name (and their statuses) left out."""
    text = (RECORDINGS / name).read_text()
    if without is None:
        return text.splitlines(keepends=True)
    decoder, lines, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        obj, end = decoder.raw_decode(text, at)
        at = end
        dropped = {v["digest"] for v in obj.get("vertexes") or [] if v.get("name") == without}
        obj["vertexes"] = [v for v in obj.get("vertexes") or [] if v["digest"] not in dropped]
        obj["statuses"] = [st for st in obj.get("statuses") or [] if st.get("vertex") not in dropped]
        lines.append(json.dumps(obj) + "\n")
    return lines


def status(**fields: Any) -> str:
    """One rawjson object on one line."""
    return json.dumps(fields) + "\n"


@dataclass
class FakeBuildx:
    """The BuildEngine port played from a script: target name → its attempts, in order."""

    registry: Registry
    script: Mapping[str, Sequence[Attempt]]
    builder_name: str = "fake-builder"
    platform: str | None = "linux/amd64"
    requests: list[BuildRequest] = field(default_factory=list)
    preflights: list[str | None] = field(default_factory=list)
    pruned: list[str | None] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)
    unknown_builder: bool = False
    _left: dict[str, list[Attempt]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ended: dict[str, threading.Event] = field(default_factory=dict)
    running: int = 0  # builds under way now
    most_at_once: int = 0  # the most builds that were under way at the same time

    def _end(self, name: str) -> threading.Event:
        """Set when a build of `name` has ended (its result returned or raised)."""
        with self._lock:
            return self._ended.setdefault(name, threading.Event())

    def sees_cache_traffic(self, docker_host: str | None) -> bool:
        """Like the docker driver of a local engine."""
        return True

    def native_platform(self) -> str | None:
        """The scripted builder's platform."""
        return self.platform

    def preflight(self, builder: str | None) -> str:
        """Answer like buildx: the builder's name, or a configuration error for one that does not exist."""
        self.preflights.append(builder)
        if self.unknown_builder:
            raise ConfigError(f"--builder / FRACTALOPS_BUILDER: {builder!r}: ERROR: no builder {builder!r} found")
        return builder or self.builder_name

    def build(
        self, request: BuildRequest, on_line: Callable[[str], None], stalled: Callable[[], str | None] | None = None
    ) -> dict[str, Any]:
        """Play the target's next scripted attempt."""
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return self._play(request, on_line, stalled)
        finally:
            with self._lock:
                self.running -= 1
            self._end(request.name).set()

    def _play(
        self, request: BuildRequest, on_line: Callable[[str], None], stalled: Callable[[], str | None] | None
    ) -> dict[str, Any]:
        """One attempt, as scripted."""
        with self._lock:
            self.requests.append(request)
            left = self._left.setdefault(request.name, list(self.script[request.name]))
            attempt = left.pop(0)
            number = len([r for r in self.requests if r.name == request.name])
        if attempt.after is not None and not self._end(attempt.after).wait(30):
            raise AssertionError(f"{request.name}: the build of {attempt.after} never ended")
        for line in recording(attempt.recording, attempt.hang or attempt.drop) if attempt.recording else []:
            on_line(line)
        digest = self._push(request, number, on_line) if attempt.push else None
        time.sleep(attempt.hold)
        if attempt.hang is not None:
            self._hang(request, attempt.hang, on_line, stalled)
        if attempt.interrupt is not None:
            signal.pthread_kill(threading.main_thread().ident or 0, attempt.interrupt)
            if not self.stopped.wait(30):
                raise AssertionError("the interrupted release never stopped its builds")
            raise EngineError(f"build of target {request.name} was stopped (ERROR: failed to solve: context canceled)")
        if attempt.fail is not None:
            on_line(attempt.fail + "\n")
            raise EngineError(f"build of target {request.name} failed: {attempt.fail}")
        if not attempt.metadata or digest is None:
            raise EngineError(f"build of target {request.name}: no readable metadata file")
        metadata = {"containerimage.digest": digest, "image.name": ",".join(request.tags)}
        request.metadata_file.parent.mkdir(parents=True, exist_ok=True)
        request.metadata_file.write_text(json.dumps(metadata))
        return metadata

    def _push(self, request: BuildRequest, number: int, on_line: Callable[[str], None]) -> str:
        """Store the image in the registry stand-in and report the push as BuildKit's exporter does."""
        tag = request.tags[0]
        path = parse_image_ref(tag).path
        revision = request.labels.get("org.opencontainers.image.revision")
        digest = self.registry.add_image(path, revision, f"{tag} attempt {number}", dict(request.labels))
        on_line(status(statuses=[{"id": f"pushing manifest for {tag}@{digest}", "started": STAMP, "completed": STAMP}]))
        return digest

    def _hang(
        self, request: BuildRequest, step: str, on_line: Callable[[str], None], stalled: Callable[[], str | None] | None
    ) -> None:
        """Start a cache step and never move it; once `stalled` names it, stop as the real adapter does."""
        on_line(status(vertexes=[{"digest": "sha256:" + "c" * 64, "name": step, "started": STAMP}]))
        deadline = time.monotonic() + 30
        while stalled is not None and time.monotonic() < deadline:
            named = stalled()
            if named:
                raise CacheDeadlineExceeded(request.name, named)
            time.sleep(0.02)
        raise AssertionError(f"{request.name}: the hung step {step!r} was never named by the deadline check")

    def stop_all(self) -> None:
        """Stop every build (they end as stopped); the pipeline calls this on an interrupt."""
        self.stopped.set()

    def prune(self, builder: str | None) -> None:
        """Remember the prune."""
        self.pruned.append(builder)
