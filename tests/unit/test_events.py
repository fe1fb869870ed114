"""Build Plane Events: the JSONL file, the HTTP sink with one retry, and the summary."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from release.cli import main
from release.errors import ConfigError
from release.events import BuildEvent, append_events, post_events, read_events, summarize, unavailable_streak
from release.github import warning_annotation
from release.urls import events_url


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
        self.bodies: list[Any] = []
        self.authorizations: list[str | None] = []
        self.fail_first = fail_first
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.authorizations.append(self.headers.get("Authorization"))
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
    assert post_events([event(), event("worker")], events_url("URL", sink.url), warnings.append) is True
    assert [e["target"] for e in sink.bodies[0]] == ["api", "worker"]
    assert warnings == []


def test_unreachable_sink_warns_and_does_not_raise() -> None:
    # A sink that cannot be reached is a warning, never an error.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    warnings: list[str] = []
    assert post_events([event()], events_url("URL", f"http://127.0.0.1:{port}/"), warnings.append, timeout=0.5) is False
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


def test_sink_credentials_in_the_url_become_basic_auth_and_are_never_shown(sink: Sink) -> None:
    # user:password@ in the sink URL is sent as an Authorization header, not as part of the host name.
    url = sink.url.replace("http://", "http://collector:s3cret%40pw@")
    parsed = events_url("FRACTALOPS_BUILD_EVENTS_URL", url)
    assert "s3cret" not in parsed.url and "s3cret" not in parsed.shown
    warnings: list[str] = []
    assert post_events([event()], parsed, warnings.append) is True
    assert sink.authorizations[-1] == "Basic " + base64.b64encode(b"collector:s3cret@pw").decode()


def test_sink_that_answers_nonsense_is_a_warning_not_a_crash() -> None:
    # Whatever the sink does, the release goes on: a server that closes without an answer is one warning.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]

        def close_each() -> None:
            for _ in range(2):
                conn, _ = server.accept()
                conn.close()

        threading.Thread(target=close_each, daemon=True).start()
        warnings: list[str] = []
        assert post_events([event()], events_url("URL", f"http://127.0.0.1:{port}/x"), warnings.append) is False
    assert len(warnings) == 1 and warnings[0].startswith("warning: build events sink")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("[1, 2]", "not a build event (want a JSON object, got list)"),
        ('{"schema": "other/v9"}', "schema: 'other/v9'"),
        (None, "duration_s: 'slow'"),
        (None, "duration_s: -5"),
        (None, "cache_hit_ratio: 7"),
        (None, "result: 'maybe'"),
    ],
)
def test_events_summary_refuses_a_line_that_is_not_a_build_event(tmp_path: Path, line: str | None, needle: str) -> None:
    # Any line that is not a build event of this schema is exit 2 naming the file, line, field and value.
    good = json.loads(event().to_json())
    if line is None:
        field, value = {
            "duration_s: 'slow'": ("duration_s", "slow"),
            "duration_s: -5": ("duration_s", -5),
            "cache_hit_ratio: 7": ("cache_hit_ratio", 7),
            "result: 'maybe'": ("result", "maybe"),
        }[needle]
        line = json.dumps({**good, field: value})
    path = tmp_path / "events.jsonl"
    path.write_text(event().to_json() + "\n" + line + "\n")
    result = CliRunner().invoke(main, ["events", "summary", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:2: {needle}")
    assert "Traceback" not in result.stderr


def test_nan_duration_is_refused(tmp_path: Path) -> None:
    # NaN is not a duration (json.dumps writes it as NaN, which Python reads back).
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({**json.loads(event().to_json()), "duration_s": float("nan")}) + "\n")
    result = CliRunner().invoke(main, ["events", "summary", str(path)])
    assert result.exit_code == 2 and "duration_s: nan" in result.stderr


def test_events_file_under_a_regular_file_names_the_real_cause(tmp_path: Path) -> None:
    # A parent that is a file is "Not a directory" (mkdir alone would say "File exists").
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError) as caught:
        append_events([event()], blocker / "events.jsonl")
    assert caught.value.strerror == "Not a directory" and caught.value.filename == str(blocker)


def test_interrupted_builds_are_counted_apart_from_failures(tmp_path: Path) -> None:
    # A cancelled build says nothing about the build plane: it is shown, and left out of the failure rate.
    path = tmp_path / "events.jsonl"
    append_events([event(), event(result="failed"), event(result="interrupted"), event(result="interrupted")], path)
    summary = summarize(read_events(path))
    assert summary["failure_rate"] == 0.5
    assert summary["interrupted"] == 2
    result = CliRunner().invoke(main, ["events", "summary", str(path)])
    assert "failure rate: 50.0% (2 interrupted, not counted)" in result.output


class Recorder:
    """A real HTTP server on loopback that records every request it gets and answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                recorder.requests.append((self.command, self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_HEAD = _record

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/elsewhere"


class Redirector:
    """A real HTTP server on loopback that answers every request with a redirect to `location`."""

    def __init__(self, status: int, location: str) -> None:
        self.hits = 0
        redirector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                redirector.hits += 1
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://collector:s3cret-pw@127.0.0.1:{self.server.server_port}/events"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_sink_redirect_is_a_failed_delivery_and_is_not_followed(status: int) -> None:
    # A sink answering 3xx has not taken the events: nothing (least of all the credentials) reaches the new host.
    recorder = Recorder()
    redirector = Redirector(status, recorder.url)
    for server in (recorder.server, redirector.server):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        warnings: list[str] = []
        delivered = post_events([event()], events_url("URL", redirector.url), warnings.append, timeout=2.0)
    finally:
        recorder.server.shutdown()
        redirector.server.shutdown()
    assert delivered is False
    assert redirector.hits >= 1
    assert recorder.requests == []
    assert len(warnings) == 1 and f"HTTP {status}" in warnings[0] and "redirect" in warnings[0]
    assert "s3cret" not in warnings[0] and "collector" not in warnings[0]


@pytest.mark.parametrize(
    ("userinfo", "password"),
    [("collector:s3c%2Fret", "s3c/ret"), ("collector:s3c%40ret", "s3c@ret"), ("collector:s3c@ret", "s3c@ret")],
    ids=["encoded-slash", "encoded-at", "raw-at"],
)
def test_sink_password_with_slash_or_at_is_sent_as_basic_auth_and_never_shown(
    sink: Sink, userinfo: str, password: str
) -> None:
    # A password holding '/' or '@' (percent-encoded, or a raw '@') reaches the sink whole and is never shown.
    parsed = events_url("FRACTALOPS_BUILD_EVENTS_URL", sink.url.replace("http://", f"http://{userinfo}@"))
    for piece in ("s3c", "ret", "collector"):
        assert piece not in parsed.url and piece not in parsed.shown
    assert post_events([event()], parsed, [].append) is True
    assert sink.authorizations[-1] == "Basic " + base64.b64encode(f"collector:{password}".encode()).decode()


@pytest.mark.parametrize(
    "value",
    [
        "http://collector:s3c/ret@127.0.0.1:9/events",
        "http://collector:1234/5678@127.0.0.1:9/events",
        "http://collector:s3c?ret@127.0.0.1:9/events",
        "http://collector:s3c#ret@127.0.0.1:9/events",
        "ftp://collector:s3c@ret@127.0.0.1/events",
        "ftp://collector:s3c/ret@127.0.0.1/events",
        "ftp://collector:s3c%2Fret@127.0.0.1/events",
        "ftp://collector:s3c%40ret@127.0.0.1/events",
        "http://collector:s3c/ret@127.0.0.1:9 /events",
    ],
)
def test_refused_sink_url_never_shows_a_password_holding_slash_or_at(value: str) -> None:
    # A sink URL that cannot be used as given is refused with its credentials masked, whatever they hold.
    from release.errors import UsageError

    with pytest.raises(UsageError) as caught:
        events_url("FRACTALOPS_BUILD_EVENTS_URL", value)
    message = str(caught.value)
    assert message.startswith("FRACTALOPS_BUILD_EVENTS_URL=")
    for piece in ("s3c", "ret", "1234", "5678", "collector"):
        assert piece not in message


@pytest.mark.parametrize(
    "text",
    [
        "push to https://bot:s3c/ret@git.example/org/repo.git failed",
        "push to https://bot:s3c@ret@git.example/org/repo.git failed",
        "push to https://bot:s3c%2Fret@git.example/org/repo.git failed",
        "push to https://bot:s3c%40ret@git.example/org/repo.git failed",
    ],
)
def test_mask_credentials_hides_a_password_holding_slash_or_at(text: str) -> None:
    # Free text naming a URL with user:password shows neither, and keeps the host and what follows.
    from release.masking import mask_credentials

    shown = mask_credentials(text)
    for piece in ("s3c", "ret", "bot"):
        assert piece not in shown
    assert shown == "push to https://***@git.example/org/repo.git failed"


def summary_of(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`fractalops-release events summary PATH` as a person runs it, cut off after 20 s."""
    exe = Path(sys.executable).with_name("fractalops-release")
    return subprocess.run(
        [str(exe), "events", "summary", str(path), *args], capture_output=True, text=True, timeout=20, check=False
    )


def test_deeply_nested_events_line_is_one_line_exit_2(tmp_path: Path) -> None:
    # A complete line nested too deeply for the JSON reader is a configuration error naming the line, no traceback.
    path = tmp_path / "events.jsonl"
    path.write_text(event().to_json() + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
    result = summary_of(path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {path}:2: JSON nested too deeply to be a build event"]


def test_non_utf8_events_line_is_one_line_exit_2_naming_the_line(tmp_path: Path) -> None:
    # A complete line that is not UTF-8 is a configuration error naming the file and the line.
    path = tmp_path / "events.jsonl"
    path.write_bytes(event().to_json().encode() + b"\n" + b'{"target": "\xff\xfeapi"}\n' + event().to_json().encode())
    result = summary_of(path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {path}:2: not UTF-8 text"]


def test_torn_last_line_then_an_append_then_summary_skips_and_counts_it(tmp_path: Path) -> None:
    # A line cut short by a full disk is skipped and reported; the next append starts on a line of its own.
    path = tmp_path / "events.jsonl"
    append_events([event(), event("worker")], path)
    whole = path.read_bytes()
    path.write_bytes(whole + event(duration=3.0).to_json().encode()[:57])  # torn: the disk filled mid-append
    append_events([event(duration=5.0)], path)
    lines = path.read_bytes().split(b"\n")
    assert lines[3] == event(duration=5.0).to_json().encode() and lines[4] == b""
    result = summary_of(path)
    assert result.returncode == 0, result.stderr
    assert "builds: 3 (api 2, worker 1)" in result.stdout
    assert result.stderr.strip().splitlines() == [f"note: {path}: skipped 1 torn line (line 3): a write cut short"]
    data = json.loads(summary_of(path, "--json").stdout)
    assert data["builds"] == 3 and data["torn_lines"] == [3]


def test_a_line_torn_inside_a_multibyte_character_is_torn_not_an_error(tmp_path: Path) -> None:
    # A write cut inside a UTF-8 character leaves a torn line, skipped like any other.
    path = tmp_path / "events.jsonl"
    line = json.dumps({**json.loads(event().to_json()), "error": "é" * 40}, ensure_ascii=False).encode()
    cut = line.index("é".encode()) + 1
    path.write_bytes(event().to_json().encode() + b"\n" + line[:cut])
    summary = summarize(read_events(path))
    assert summary["builds"] == 1 and summary["torn_lines"] == [2]


def test_append_cut_short_by_a_full_disk_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    # Appends are whole lines or nothing: a write the file system cuts short is undone (here RLIMIT_FSIZE stands
    # in for a full disk: the kernel writes what fits, then refuses).
    path = tmp_path / "events.jsonl"
    append_events([event()], path)
    before = path.read_bytes()
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_events import event\n"
        "from release.events import append_events\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 100}, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    append_events([event('worker'), event('worker')], Path(sys.argv[1]))\n"
        "except OSError as err:\n"
        "    print('refused', err.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused")
    assert path.read_bytes() == before


def test_fifo_as_events_file_is_refused_at_once(tmp_path: Path) -> None:
    # A FIFO (or any file that is not a regular file) named as the events file is one line, exit 2, never a hang.
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)
    result = summary_of(fifo)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {fifo}: not a regular file"]


def test_appending_to_a_fifo_fails_at_once_instead_of_blocking(tmp_path: Path) -> None:
    # A release never hangs on an events file that is a FIFO nobody reads: the append fails with an OSError.
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_events import event\n"
        "from release.events import append_events\n"
        "try:\n"
        "    append_events([event()], Path(sys.argv[1]))\n"
        "except OSError as err:\n"
        "    print('refused:', err.strerror)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(fifo), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.stdout.strip() == "refused: not a regular file", done.stderr


@pytest.mark.parametrize("duration", [1e308, 1e12, float("inf")])
def test_absurd_duration_is_not_a_build_event(tmp_path: Path, duration: float) -> None:
    # A duration no build can have (more than 30 days, or infinite) is refused, so p50/p95 stay finite.
    path = tmp_path / "events.jsonl"
    path.write_text(event().to_json() + "\n" + json.dumps({**json.loads(event().to_json()), "duration_s": duration}))
    result = summary_of(path)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(f"error: {path}:2: duration_s: ")
    assert "inf s" not in result.stdout


@pytest.mark.parametrize(
    "target",
    ["\n::error::pwned", "api\x1b[2J\x1b[31m", "api\r::warning::x", "\u2028::error::x", "api\x9b31m", "api\u202etxt"],
)
def test_summary_escapes_what_came_from_the_file(tmp_path: Path, target: str) -> None:
    # Target names from the file reach neither the terminal nor the Actions log raw: no control characters,
    # no line that starts a workflow command.
    path = tmp_path / "events.jsonl"
    append_events([event(), event(target)], path)
    for args in ((), ("--json",)):
        result = summary_of(path, *args)
        assert result.returncode == 0, result.stderr
        text = result.stdout + result.stderr
        assert all(ch in "\n" or ch.isprintable() for ch in text), repr(text)
        assert not [line for line in text.splitlines() if line.strip().startswith("::")]
    assert ascii(target)[1:-1].replace("\\\\", "\\") in summary_of(path).stdout


def test_summary_shows_the_cache_export_failure_rate(tmp_path: Path) -> None:
    # Export ok/failed/skipped are counted, and the export failure rate is shown beside import availability.
    path = tmp_path / "events.jsonl"
    exports = ["ok", "ok", "ok", "failed", "skipped", "skipped"]
    append_events([BuildEvent(**{**asdict(event()), "cache_export": export}) for export in exports], path)
    summary = summarize(read_events(path))
    assert summary["cache_export"] == {"ok": 3, "failed": 1, "skipped": 2}
    assert summary["cache_export_failure_rate"] == 0.25
    lines = summary_of(path).stdout.splitlines()
    at = lines.index("cache availability: 100.0%")
    assert lines[at + 1] == "cache export failure rate: 25.0% (3 ok, 1 failed, 2 skipped)"


def test_every_cut_of_an_event_line_is_torn_and_a_wrong_complete_line_is_not(tmp_path: Path) -> None:
    # Wherever a write stops inside an event line, the reader skips it as torn; a complete wrong line stays an error.
    line = BuildEvent(**{**asdict(event()), "error": 'a "quoted" é\\u', "cache_hit_ratio": 0.25}).to_json().encode()
    path = tmp_path / "events.jsonl"
    for cut in range(1, len(line)):
        path.write_bytes(event().to_json().encode() + b"\n" + line[:cut] + b"\n" + event().to_json().encode() + b"\n")
        log = read_events(path)
        assert (len(log.events), log.torn) == (2, [2]), line[:cut]
    for wrong in (b"{not json", b'{"a": 1}}', b'{"a": 1} true', b"[1, 2"):
        path.write_bytes(event().to_json().encode() + b"\n" + wrong + b"\n")
        with pytest.raises(ConfigError, match=":2: not a JSON event line"):
            read_events(path)


def test_sink_answer_is_escaped_in_the_warning() -> None:
    # Whatever a sink answers (here a status line carrying a terminal escape and a workflow command) is shown escaped.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]

        def answer_each() -> None:
            for _ in range(2):
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"\x1b[2J\r::error::pwned\r\n\r\n")

        threading.Thread(target=answer_each, daemon=True).start()
        warnings: list[str] = []
        assert post_events([event()], events_url("URL", f"http://127.0.0.1:{port}/x"), warnings.append) is False
    assert len(warnings) == 1 and all(ch.isprintable() for ch in warnings[0]), repr(warnings)
    assert "\\x1b[2J\\r::error::pwned" in warnings[0]


def test_the_unavailable_streak_counts_a_targets_latest_builds_and_skips_builds_without_the_cache() -> None:
    # Newest last: worker's builds do not break api's streak, a build with the cache disabled neither counts nor
    # breaks it, and the first build that reached the cache ends it.
    outcomes = [("api", "hit"), ("api", "unavailable"), ("worker", "hit"), ("api", "disabled"), ("api", "unavailable")]
    events = [{"target": t, "cache_import": c} for t, c in outcomes]
    assert unavailable_streak(events, "api") == 2
    assert unavailable_streak(events, "worker") == 0
    assert unavailable_streak([*events, {"target": "api", "cache_import": "miss"}], "api") == 0


def test_a_warning_annotation_escapes_its_title_and_message_as_the_actions_toolkit_does() -> None:
    # Data: % CR LF; properties also : and , (a message cannot end the command or start a new one).
    line = warning_annotation("Cache: down, again", "100% cold\n::error::not really")
    assert line == "::warning title=Cache%3A down%2C again::100%25 cold%0A::error::not really"
    assert "\n" not in line


def test_a_reused_image_neither_counts_toward_nor_breaks_the_unavailable_streak() -> None:
    # No build ran: nothing was asked of the cache.
    outcomes = [("api", "unavailable"), ("api", "unused"), ("api", "unavailable")]
    assert unavailable_streak([{"target": t, "cache_import": c} for t, c in outcomes], "api") == 2


def test_summary_counts_reused_images_apart_from_build_durations_and_cache_availability(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reused = event(duration=0.0, cache="unused")
    reused.reused = True
    append_events([event(duration=10.0), event(duration=30.0), reused], path)
    summary = summarize(read_events(path))
    assert summary["builds"] == 3 and summary["reused"] == 1
    assert summary["duration_p50_s"] == pytest.approx(20.0)
    assert summary["cache_availability"] == 1.0


def test_an_event_whose_reused_is_not_a_boolean_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = json.loads(event().to_json())
    line["reused"] = "yes"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ConfigError, match="reused: 'yes': want true or false"):
        read_events(path)
