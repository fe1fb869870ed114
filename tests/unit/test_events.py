"""Build Plane Events: the JSONL file, the HTTP sink with one retry, and the summary."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from release.cli import main
from release.events import BuildEvent, append_events, post_events, read_events, summarize


def event(target: str = "api", result: str = "ok", duration: float = 1.0, cache: str = "hit") -> BuildEvent:
    return BuildEvent(
        target=target,
        image_ref=None,
        source_commit="c" * 40,
        builder="default",
        started_at="2026-11-28T00:00:00+00:00",
        ended_at="2026-11-28T00:00:01+00:00",
        duration_s=duration,
        result=result,
        error=None if result == "ok" else "boom",
        cache_import=cache,
        cache_export="ok" if cache == "hit" else "skipped",
        cache_hit_ratio=1.0 if cache == "hit" else None,
        ci_run_id="42",
    )


class Sink:
    """A real HTTP server on loopback standing in for the Build Plane Events collector."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[object] = []
        self.fail_first = fail_first
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if sink.fail_first > 0:
                    sink.fail_first -= 1
                    self.send_response(503)
                else:
                    sink.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/events"


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink(fail_first=1)
    thread = threading.Thread(target=s.server.serve_forever, daemon=True)
    thread.start()
    yield s
    s.server.shutdown()


def test_sink_receives_the_events_after_one_retry(sink: Sink) -> None:
    # A sink that fails once gets the events on the retry; nothing is warned.
    warnings: list[str] = []
    assert post_events([event(), event("worker")], sink.url, warnings.append) is True
    assert [e["target"] for e in sink.bodies[0]] == ["api", "worker"]  # type: ignore[index]
    assert warnings == []


def test_unreachable_sink_warns_and_does_not_raise() -> None:
    # A sink that cannot be reached is a warning, never an error.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    warnings: list[str] = []
    assert post_events([event()], f"http://127.0.0.1:{port}/", warnings.append, timeout=0.5) is False
    assert len(warnings) == 1 and "JSONL" in warnings[0]


def test_summary_gives_failure_rate_percentiles_and_availability(tmp_path: Path) -> None:
    # Failure rate, p50/p95 duration and cache availability come from the JSONL file.
    path = tmp_path / "events.jsonl"
    append_events([event(duration=float(d)) for d in range(1, 20)], path)
    append_events([event(result="failed", duration=20.0, cache="unavailable")], path)
    summary = summarize(read_events(path))
    assert summary["builds"] == 20
    assert summary["failure_rate"] == 0.05
    assert summary["duration_p50_s"] == pytest.approx(10.5)
    assert summary["duration_p95_s"] == pytest.approx(19.05)
    assert summary["cache_availability"] == 0.95


def test_events_summary_on_a_broken_line_is_exit_2(tmp_path: Path) -> None:
    # A JSONL file with a broken line is a configuration error naming the line.
    path = tmp_path / "events.jsonl"
    path.write_text(event().to_json() + "\n{not json\n")
    result = CliRunner().invoke(main, ["events", "summary", str(path)])
    assert result.exit_code == 2
    assert "events.jsonl:2" in result.stderr


def test_release_records_live_beside_the_build_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Promotion records default to the folder of the build events file, so one place holds both.
    from release.gitops.record import default_record_path

    monkeypatch.delenv("FRACTALOPS_EVENTS_DIR", raising=False)
    monkeypatch.setenv("FRACTALOPS_BUILD_EVENTS_FILE", str(tmp_path / "ci" / "build-events.jsonl"))
    assert default_record_path() == tmp_path / "ci" / "releases.jsonl"
    monkeypatch.setenv("FRACTALOPS_EVENTS_DIR", str(tmp_path / "elsewhere"))
    assert default_record_path() == tmp_path / "elsewhere" / "releases.jsonl"
