"""rawjson progress: plain lines, cached-step counting, and the live board at a terminal."""

from __future__ import annotations

import base64
import io
import json
import re

from release.progress import LiveBoard, ProgressTracker

T0, T1 = "2026-11-28T10:00:00.000000000Z", "2026-11-28T10:00:02.500000000Z"


def status(*vertexes: dict[str, object], logs: list[dict[str, object]] | None = None) -> str:
    """One rawjson status object, pretty-printed over several lines as buildx 0.13 writes it."""
    return json.dumps({"vertexes": list(vertexes), "logs": logs or []}, indent=2)


def feed(tracker: ProgressTracker, text: str) -> None:
    for line in text.splitlines(keepends=True):
        tracker.feed(line)


def screen(raw: str) -> list[str]:
    """What a terminal shows after the board's cursor-up-and-clear sequences."""
    lines: list[str] = []
    for chunk in re.split(r"(\x1b\[\d+F\x1b\[J)", raw):
        match = re.fullmatch(r"\x1b\[(\d+)F\x1b\[J", chunk)
        if match:
            del lines[len(lines) - int(match.group(1)) :]
        else:
            lines += chunk.splitlines()
    return lines


def test_plain_lines_and_hit_ratio_count_executed_steps_but_not_from() -> None:
    # FROM is a source, not an executed step: two RUN steps, one cached, give a ratio of 0.5.
    out: list[str] = []
    tracker = ProgressTracker("[api]", out.append)
    feed(
        tracker,
        status(
            {"digest": "a", "name": "[base 1/3] FROM docker.io/library/busybox:1.36", "started": T0, "completed": T1}
        ),
    )
    feed(tracker, status({"digest": "b", "name": "[base 2/3] RUN sleep 2", "started": T0, "completed": T1}))
    feed(
        tracker,
        status({"digest": "c", "name": "[api 1/1] RUN echo api", "cached": True, "started": T0, "completed": T0}),
    )
    feed(
        tracker,
        status(
            {"digest": "d", "name": "[internal] load build definition from Dockerfile", "started": T0, "completed": T0}
        ),
    )
    assert tracker.cache_hit_ratio == 0.5
    assert "[api] #2 [base 2/3] RUN sleep 2" in out
    assert "[api] #2 DONE 2.5s" in out
    assert "[api] #3 CACHED" in out


def test_live_board_keeps_one_line_per_target_and_shows_a_failing_steps_log() -> None:
    # At a terminal each target has one status line; a failing step's output and error scroll above it.
    stream = io.StringIO()
    board = LiveBoard(stream)
    api = ProgressTracker("[api]", board.print, board=board)
    worker = ProgressTracker("[worker]", board.print, board=board)
    feed(api, status({"digest": "a", "name": "[api 1/1] RUN echo api", "cached": True, "started": T0, "completed": T0}))
    log = {"vertex": "w", "stream": 1, "data": base64.b64encode(b"compiling\nboom\n").decode()}
    feed(worker, status({"digest": "w", "name": "[worker 1/1] RUN make", "started": T0}, logs=[log]))
    assert "compiling" not in stream.getvalue()  # output of a running step is held back
    feed(
        worker,
        status(
            {"digest": "w", "name": "[worker 1/1] RUN make", "started": T0, "completed": T1, "error": "exit code: 2"}
        ),
    )
    shown = screen(stream.getvalue())
    assert shown[:4] == [
        "[worker] #1 [worker 1/1] RUN make",
        "[worker] #1 compiling",
        "[worker] #1 boom",
        "[worker] #1 ERROR exit code: 2",
    ]
    assert shown[4:] == ["[api] 1/1 steps, 1 cached", "[worker] 1/1 steps, 0 cached"]


def importing(digest: str, ref: str, error: str | None = None) -> dict[str, object]:
    vertex: dict[str, object] = {"digest": digest, "name": f"importing cache manifest from {ref}", "started": T0}
    vertex["completed"] = T1
    if error:
        vertex["error"] = error
    return vertex


def test_cache_import_outcome_tells_a_dead_cache_from_a_missing_one_and_a_working_one() -> None:
    # Every import failing to connect is 'unavailable', every import finding no tag is 'miss', one working is None.
    refused = "failed to configure registry cache importer: failed to do request: dial tcp: connection refused"
    missing = "failed to configure registry cache importer: 127.0.0.1:35080/fractalops/buildcache:x: not found"
    cases = [
        ([importing("a", "c:api-x", refused), importing("b", "c:api-main", refused)], "unavailable"),
        ([importing("a", "c:api-x", missing), importing("b", "c:api-main", missing)], "miss"),
        ([importing("a", "c:api-x", missing), importing("b", "c:api-main")], None),
        ([], None),
    ]
    for vertexes, expected in cases:
        tracker = ProgressTracker("[api]", lambda _line: None)
        for vertex in vertexes:
            feed(tracker, status(vertex))
        assert tracker.cache_import_outcome() == expected, vertexes
