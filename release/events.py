"""Build Plane Events: one record per target build, appended to JSONL and optionally POSTed."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import stat
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from release.errors import ConfigError
from release.fsutil import read_regular
from release.urls import SinkURL

SCHEMA = "fractalops.build-plane-event/v1"


@dataclass
class BuildEvent:
    """What happened to one target build."""

    target: str
    image_ref: str | None
    source_commit: str | None
    builder: str | None
    started_at: str
    ended_at: str
    duration_s: float
    result: str  # ok | failed | interrupted
    error: str | None
    cache_import: (
        str  # hit | miss | unavailable | disabled | unused (no build: an image with the same inputs was reused)
    )
    cache_export: str  # ok | failed | skipped
    cache_hit_ratio: float | None
    ci_run_id: str | None
    reused: bool = False  # no build ran: the image at the tag was built from the same inputs (release.build.reuse)
    schema: str = SCHEMA

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)


def append_events(events: Iterable[BuildEvent], path: Path) -> None:
    """Append the events as whole lines or not at all: one write under a lock, undone if it is cut short.

    A file whose last line was torn (a write cut short earlier) gets a newline first, so the new lines stand
    alone. Anything but a regular file (or a character device such as /dev/null) is refused without waiting.
    """
    data = "".join(event.to_json() + "\n" for event in events).encode()
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():  # mkdir would say "File exists"; the cause is a file where a folder should be
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_NONBLOCK: opening a FIFO must not wait for a reader; it changes nothing for a regular file.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISCHR(kind):
            os.write(fd, data)
            return
        if not stat.S_ISREG(kind):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        fcntl.flock(fd, fcntl.LOCK_EX)  # appenders of this module take turns, so the size read here stays true
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        written = 0
        try:
            while written < len(data):  # one write; a second only if the file system took part of it
                written += os.write(fd, data[written:])
        except BaseException:
            if written:
                os.ftruncate(fd, size)  # whole lines or nothing
            raise
    finally:
        os.close(fd)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib would re-send the Authorization header to the new host, as a GET."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        """No new request: the 3xx reaches the caller as an HTTPError."""
        return None


def post_events(events: list[BuildEvent], sink: SinkURL, warn: Callable[[str], None], timeout: float = 2.0) -> bool:
    """POST the events as JSON with a short timeout and one retry; warn, never raise, on failure.

    A redirect is never followed (the credentials stay with the sink's own host) and counts as a failed delivery.
    """
    body = json.dumps([asdict(e) for e in events]).encode()
    headers = {"Content-Type": "application/json"}
    if sink.authorization:
        headers["Authorization"] = sink.authorization
    opener = urllib.request.build_opener(_NoRedirects)
    last = ""
    for attempt in range(2):
        request = urllib.request.Request(sink.url, data=body, method="POST", headers=headers)
        try:
            with opener.open(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return True
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
            if 300 <= err.code < 400:
                last += ": a redirect, which is not followed"
                break  # asking again gets the same redirect
        except (urllib.error.URLError, OSError) as err:
            last = str(getattr(err, "reason", err))
        except Exception as err:  # a sink must never fail the release, whatever it answers
            last = f"{type(err).__name__}: {err}"
        if attempt == 0:
            time.sleep(0.3)
    warn(
        f"warning: build events sink {escape(sink.shown)} did not take the events ({escape(last)}); "
        "they are in the JSONL file"
    )
    return False


_CHOICES = {
    "result": ("ok", "failed", "interrupted"),
    "cache_import": ("hit", "miss", "unavailable", "disabled", "unused"),
    "cache_export": ("ok", "failed", "skipped"),
}


MAX_DURATION_S = 30 * 24 * 3600  # no build runs for a month; a larger figure is no build event


def _number(value: Any) -> float | None:
    """`value` as a finite float, None if it is not a finite number (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _shown(value: Any) -> str:
    """`repr(value)` cut to one short piece (control characters escaped by repr)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def escape(text: str) -> str:
    """`text` from a file, safe to print: backslashes doubled, anything not printable as a backslash escape.

    No control character (terminal escapes, a newline that would start a `::workflow command::` line in a
    GitHub Actions log, a bidirectional override) survives.
    """
    return "".join("\\\\" if ch == "\\" else ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def check_event(data: Any, where: str) -> dict[str, Any]:
    """`data` if it is a build event of this schema; else a ConfigError naming `where`, the field and the value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: not a build event (want a JSON object, got {type(data).__name__})")
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"{where}: schema: {_shown(data.get('schema'))}: not {SCHEMA}")
    if not isinstance(data.get("target"), str) or not data["target"]:
        raise ConfigError(f"{where}: target: {_shown(data.get('target'))}: want a target name")
    for field, allowed in _CHOICES.items():
        if data.get(field) not in allowed:
            raise ConfigError(f"{where}: {field}: {_shown(data.get(field))}: want one of {', '.join(allowed)}")
    duration = _number(data.get("duration_s"))
    if duration is None or not 0 <= duration <= MAX_DURATION_S:
        raise ConfigError(
            f"{where}: duration_s: {_shown(data.get('duration_s'))}: want seconds, from 0 to {MAX_DURATION_S}"
        )
    if not isinstance(data.get("reused", False), bool):
        raise ConfigError(f"{where}: reused: {_shown(data.get('reused'))}: want true or false")
    ratio = data.get("cache_hit_ratio")
    fraction = _number(ratio)
    if ratio is not None and (fraction is None or not 0.0 <= fraction <= 1.0):
        raise ConfigError(f"{where}: cache_hit_ratio: {_shown(ratio)}: want a number from 0 to 1, or null")
    return data


@dataclass
class EventLog:
    """The build events of a JSONL file, and the numbers of the torn lines skipped."""

    events: list[dict[str, Any]]
    torn: list[int]


# What may follow the point where a torn line's JSON stops: part of a number, a literal or a \u escape.
_PARTIAL_TOKEN = re.compile(r"-?[0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]*)?|u[0-9a-fA-F]{0,4}")
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")


def _is_torn(text: str, err: json.JSONDecodeError) -> bool:
    """Whether `text` is an event line cut short (a prefix of a JSON object), not a complete line that is wrong."""
    if not text.startswith("{") or err.msg == "Extra data":
        return False
    if err.msg.startswith("Unterminated string"):
        return True
    rest = text[err.pos :]
    return _PARTIAL_TOKEN.fullmatch(rest) is not None or any(word.startswith(rest) for word in _LITERALS)


def read_events(path: Path) -> EventLog:
    """Read a JSONL events file: torn lines are skipped and counted; any other non-event line is a ConfigError."""
    events: list[dict[str, Any]] = []
    torn: list[int] = []
    try:
        data = read_regular(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the events file: {err.strerror}") from None
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.reason == "unexpected end of data" and err.end == len(raw) and raw.startswith(b"{"):
                torn.append(number)  # cut inside a character
                continue
            raise ConfigError(f"{where}: not UTF-8 text") from None
        try:
            line = json.loads(text)
        except json.JSONDecodeError as err:
            if _is_torn(text, err):
                torn.append(number)
                continue
            raise ConfigError(f"{where}: not a JSON event line") from None
        except RecursionError:
            raise ConfigError(f"{where}: JSON nested too deeply to be a build event") from None
        events.append(check_event(line, where))
    return EventLog(events, torn)


def unavailable_streak(events: Sequence[Mapping[str, Any]], target: str) -> int:
    """How many of `target`'s latest builds in a row found the build cache unavailable (builds without it skipped)."""
    count = 0
    for event in reversed(events):
        if event.get("target") != target or event.get("cache_import") in ("disabled", "unused"):
            continue
        if event.get("cache_import") != "unavailable":
            break
        count += 1
    return count


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(fraction * 100) - 1]


def summarize(log: EventLog) -> dict[str, Any]:
    """Failure rate, p50/p95 duration, cache import availability and cache export failures over the events."""
    events = log.events
    if not events:
        return {"builds": 0, "torn_lines": log.torn}
    reused = sum(1 for e in events if e.get("reused") is True)
    # A reused image took no build: its seconds are no build's, and it asked nothing of the cache.
    durations = [float(e.get("duration_s", 0.0)) for e in events if e.get("reused") is not True] or [0.0]
    # An interrupted build (Ctrl-C, a cancelled job) is no failure of the build plane: counted apart.
    interrupted = sum(1 for e in events if e.get("result") == "interrupted")
    failed = sum(1 for e in events if e.get("result") == "failed")
    finished = len(events) - interrupted
    probed = [e for e in events if e.get("cache_import") not in ("disabled", "unused")]
    available = sum(1 for e in probed if e.get("cache_import") != "unavailable")
    exports = {
        outcome: sum(1 for e in events if e.get("cache_export") == outcome) for outcome in _CHOICES["cache_export"]
    }
    tried = exports["ok"] + exports["failed"]
    ratios = [float(e["cache_hit_ratio"]) for e in events if e.get("cache_hit_ratio") is not None]
    per_target: dict[str, int] = {}
    for e in events:
        per_target[str(e.get("target"))] = per_target.get(str(e.get("target")), 0) + 1
    return {
        "builds": len(events),
        "per_target": dict(sorted(per_target.items())),
        "interrupted": interrupted,
        "reused": reused,
        "failure_rate": round(failed / finished, 4) if finished else None,
        "duration_p50_s": round(_percentile(durations, 0.50), 3),
        "duration_p95_s": round(_percentile(durations, 0.95), 3),
        "cache_availability": round(available / len(probed), 4) if probed else None,
        "cache_export": exports,
        "cache_export_failure_rate": round(exports["failed"] / tried, 4) if tried else None,
        "cache_hit_ratio_mean": round(statistics.fmean(ratios), 4) if ratios else None,
        "torn_lines": log.torn,
    }


def render_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines; what came from the file (target names) is escaped."""
    if not summary.get("builds"):
        return "no build events\n"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:.1f}%"

    exports = summary["cache_export"]
    return (
        f"builds: {summary['builds']} ({', '.join(f'{escape(k)} {v}' for k, v in summary['per_target'].items())})\n"
        f"failure rate: {pct(summary['failure_rate'])}"
        + (f" ({summary['interrupted']} interrupted, not counted)" if summary.get("interrupted") else "")
        + "\n"
        + (f"reused without a build: {summary['reused']}\n" if summary.get("reused") else "")
        + f"duration p50: {summary['duration_p50_s']:.2f} s, p95: {summary['duration_p95_s']:.2f} s\n"
        f"cache availability: {pct(summary['cache_availability'])}\n"
        f"cache export failure rate: {pct(summary['cache_export_failure_rate'])} "
        f"({exports['ok']} ok, {exports['failed']} failed, {exports['skipped']} skipped)\n"
        f"mean cache hit ratio: {pct(summary['cache_hit_ratio_mean'])}\n"
    )


def torn_note(path: Path, torn: list[int]) -> str:
    """One line saying which torn lines were skipped."""
    lines = ", ".join(str(n) for n in torn[:10]) + (", …" if len(torn) > 10 else "")
    plural = "s" if len(torn) > 1 else ""
    return f"note: {path}: skipped {len(torn)} torn line{plural} (line{plural} {lines}): a write cut short"
