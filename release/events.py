"""Build Plane Events: one record per target build, appended to JSONL and optionally POSTed."""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from release.checks import SinkURL
from release.errors import ConfigError

EVENTS_FILE_ENV = "FRACTALOPS_BUILD_EVENTS_FILE"
EVENTS_URL_ENV = "FRACTALOPS_BUILD_EVENTS_URL"
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
    cache_import: str  # hit | miss | unavailable | disabled
    cache_export: str  # ok | failed | skipped
    cache_hit_ratio: float | None
    ci_run_id: str | None
    schema: str = SCHEMA

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)


def default_events_file() -> Path:
    """`$FRACTALOPS_BUILD_EVENTS_FILE`, else the user's state folder."""
    explicit = os.environ.get(EVENTS_FILE_ENV)
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "fractalops-release" / "build-events.jsonl"


def append_events(events: Iterable[BuildEvent], path: Path) -> None:
    """Append the events to the JSONL file in one write."""
    text = "".join(event.to_json() + "\n" for event in events)
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():  # mkdir would say "File exists"; the cause is a file where a folder should be
                raise NotADirectoryError(20, "Not a directory", str(folder))
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


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
    warn(f"warning: build events sink {sink.shown} did not take the events ({last}); they are in the JSONL file")
    return False


_CHOICES = {
    "result": ("ok", "failed", "interrupted"),
    "cache_import": ("hit", "miss", "unavailable", "disabled"),
    "cache_export": ("ok", "failed", "skipped"),
}


def _number(value: Any) -> float | None:
    """`value` as a finite float, None if it is not a finite number (booleans are not numbers here)."""
    import math

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def check_event(data: Any, where: str) -> dict[str, Any]:
    """`data` if it is a build event of this schema; else a ConfigError naming `where`, the field and the value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: not a build event (want a JSON object, got {type(data).__name__})")
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"{where}: schema: {data.get('schema')!r}: not {SCHEMA}")
    if not isinstance(data.get("target"), str) or not data["target"]:
        raise ConfigError(f"{where}: target: {data.get('target')!r}: want a target name")
    for field, allowed in _CHOICES.items():
        if data.get(field) not in allowed:
            raise ConfigError(f"{where}: {field}: {data.get(field)!r}: want one of {', '.join(allowed)}")
    duration = _number(data.get("duration_s"))
    if duration is None or duration < 0:
        raise ConfigError(f"{where}: duration_s: {data.get('duration_s')!r}: want seconds, 0 or more")
    ratio = data.get("cache_hit_ratio")
    fraction = _number(ratio)
    if ratio is not None and (fraction is None or not 0.0 <= fraction <= 1.0):
        raise ConfigError(f"{where}: cache_hit_ratio: {ratio!r}: want a number from 0 to 1, or null")
    return data


def read_events(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL events file; a line that is not a build event is a configuration error naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the events file: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}:{number}: not a JSON event line") from None
        events.append(check_event(data, f"{path}:{number}"))
    return events


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(fraction * 100) - 1]


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Failure rate, p50/p95 duration and cache availability over the events."""
    if not events:
        return {"builds": 0}
    durations = [float(e.get("duration_s", 0.0)) for e in events]
    # An interrupted build (Ctrl-C, a cancelled job) is no failure of the build plane: counted apart.
    interrupted = sum(1 for e in events if e.get("result") == "interrupted")
    failed = sum(1 for e in events if e.get("result") == "failed")
    finished = len(events) - interrupted
    probed = [e for e in events if e.get("cache_import") != "disabled"]
    available = sum(1 for e in probed if e.get("cache_import") != "unavailable")
    ratios = [float(e["cache_hit_ratio"]) for e in events if e.get("cache_hit_ratio") is not None]
    per_target: dict[str, int] = {}
    for e in events:
        per_target[str(e.get("target"))] = per_target.get(str(e.get("target")), 0) + 1
    return {
        "builds": len(events),
        "per_target": dict(sorted(per_target.items())),
        "interrupted": interrupted,
        "failure_rate": round(failed / finished, 4) if finished else None,
        "duration_p50_s": round(_percentile(durations, 0.50), 3),
        "duration_p95_s": round(_percentile(durations, 0.95), 3),
        "cache_availability": round(available / len(probed), 4) if probed else None,
        "cache_hit_ratio_mean": round(statistics.fmean(ratios), 4) if ratios else None,
    }


def render_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines."""
    if not summary.get("builds"):
        return "no build events\n"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:.1f}%"

    return (
        f"builds: {summary['builds']} ({', '.join(f'{k} {v}' for k, v in summary['per_target'].items())})\n"
        f"failure rate: {pct(summary['failure_rate'])}"
        + (f" ({summary['interrupted']} interrupted, not counted)" if summary.get("interrupted") else "")
        + "\n"
        f"duration p50: {summary['duration_p50_s']:.2f} s, p95: {summary['duration_p95_s']:.2f} s\n"
        f"cache availability: {pct(summary['cache_availability'])}\n"
        f"mean cache hit ratio: {pct(summary['cache_hit_ratio_mean'])}\n"
    )
