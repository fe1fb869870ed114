"""rawjson progress: plain lines, cached-step counting, and the live board at a terminal."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from release.build import progress
from release.build.progress import LiveBoard, ProgressTracker

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


RECORDED = Path(__file__).parent / "rawjson"
EXPORT = "exporting cache to registry"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock release.progress reads, set by the test (seconds)."""
    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def _seconds_of(stamp: str) -> float:
    """An rawjson timestamp (nanoseconds, `Z`) as epoch seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")


def recorded(name: str) -> list[tuple[float, str]]:
    """A recorded buildx rawjson stream as (arrival time, text) per JSON object: the newest timestamp it holds."""
    text = (RECORDED / name).read_text()
    decoder, position, chunks = json.JSONDecoder(), 0, []
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        _, end = decoder.raw_decode(text, position)
        stamps = re.findall(r'"(?:timestamp|started|completed)": "([^"]+)"', text[position:end])
        chunks.append((max(map(_seconds_of, stamps)) if stamps else None, text[position:end] + "\n"))
        position = end
    objects, arrived = [], next(stamp for stamp, _ in chunks if stamp is not None)
    for stamp, chunk in chunks:  # an object without a timestamp arrives with the one before it
        arrived = max(arrived, stamp or arrived)
        objects.append((arrived, chunk))
    return objects


def replay(tracker: ProgressTracker, clock: list[float], objects: list[tuple[float, str]]) -> Iterator[float]:
    """Feed each object at its arrival time; yield every 0.1 s of the recording (after what arrived by then)."""
    start = objects[0][0]
    pending = list(objects)
    moment = start
    while pending:
        while pending and pending[0][0] <= moment:
            arrived, text = pending.pop(0)
            clock[0] = arrived - start
            feed(tracker, text)
        clock[0] = moment - start
        yield clock[0]
        moment += 0.1


def export_span(objects: list[tuple[float, str]]) -> float:
    """Seconds the recorded cache export vertex ran (started to completed)."""
    text = "".join(chunk for _, chunk in objects)
    stamps = re.findall(
        r'"name": "exporting cache to registry",\s+"started": "([^"]+)",\s+"completed": "([^"]+)"', text
    )
    (started, completed), *_ = stamps
    return _seconds_of(completed) - _seconds_of(started)


def test_a_cache_export_that_keeps_finishing_layers_is_never_stalled_however_long_it_runs(clock: list[float]) -> None:
    # A recorded export of seven layers runs longer than a 2 s deadline, but each layer ends well within it: never stalled.
    objects = recorded("export-seven-layers.rawjson")
    assert export_span(objects) > 2.5, "the recording must outlast the deadline for this test to mean anything"
    tracker = ProgressTracker("[api]", lambda _line: None)
    judged = [(moment, tracker.stalled_cache_step(2.0)) for moment in replay(tracker, clock, objects)]
    assert [(moment, step) for moment, step in judged if step] == []
    assert tracker.vertices and any(v.name == EXPORT and v.completed for v in tracker.vertices.values())


def test_a_cache_export_whose_bytes_crawl_is_cut_after_the_deadline_whatever_statuses_it_reports(
    clock: list[float],
) -> None:
    # The recorded seven-layer export finishes a layer within every 2 s, so statuses alone never stall it; when its
    # bytes since it began average below the minimum rate, it is crawling once it has run longer than the deadline.
    objects = recorded("export-seven-layers.rawjson")
    tracker = ProgressTracker("[api]", lambda _line: None)
    crawling, fine, began = [], [], []
    for moment in replay(tracker, clock, objects):
        crawling.append((moment, tracker.crawling_cache_step(2.0, lambda since: began.append(since) or True)))
        fine.append(tracker.crawling_cache_step(2.0, lambda _since: False))
    first = next(moment for moment, step in crawling if step == EXPORT)
    start = next(v.began_at for v in tracker.vertices.values() if v.name == EXPORT)
    assert start is not None and 2.0 < first - start <= 2.1, "cut once the step has run for the deadline"
    assert set(fine) == {None}
    assert start in began, "the rate is judged from when the step began"


def test_a_cache_step_with_no_status_and_no_bytes_for_the_deadline_is_stalled(clock: list[float]) -> None:
    # Recorded: the cache host went silent mid-layer. With no new status and no bytes moved for 3 s the export is
    # stalled; bytes moving (seen on the connections to the cache host) postpone the verdict by the deadline.
    tracker = ProgressTracker("[api]", lambda _line: None)
    *_, last = replay(tracker, clock, recorded("export-cut-mid-layer.rawjson"))
    clock[0] = last + 2.9
    assert tracker.stalled_cache_step(3.0) is None
    clock[0] = last + 3.1
    assert tracker.stalled_cache_step(3.0) == EXPORT
    assert tracker.stalled_cache_step(3.0, bytes_moved_at=last + 2.5) is None
    clock[0] = last + 5.6
    assert tracker.stalled_cache_step(3.0, bytes_moved_at=last + 2.5) == EXPORT


def test_one_big_layer_upload_shows_no_status_for_seconds_so_moving_bytes_keep_it_alive(clock: list[float]) -> None:
    # Recorded: buildx reports a 300 MB layer's cache upload only when it starts and ends (7 s apart). With bytes
    # moving every 0.5 s it is never stalled at a 3 s deadline; judged by statuses alone it would be.
    objects = recorded("export-one-300mb-layer.rawjson")
    tracker = ProgressTracker("[api]", lambda _line: None)
    alone, with_bytes = [], []
    for moment in replay(tracker, clock, objects):
        alone.append(tracker.stalled_cache_step(3.0))
        with_bytes.append(tracker.stalled_cache_step(3.0, bytes_moved_at=moment - moment % 0.5))
    assert EXPORT in alone, "the recording must hold a silent stretch longer than the deadline"
    assert set(with_bytes) == {None}


def test_the_pushed_digest_comes_from_a_finished_push_of_this_builds_tag(clock: list[float]) -> None:
    # "pushing manifest for <tag>@<digest>" gives the digest of the image pushed under the tag, once it finished;
    # it equals the metadata file's containerimage.digest. Another tag, or a push still running, gives None.
    objects = recorded("export-one-300mb-layer.rawjson")
    metadata = json.loads((RECORDED / "export-one-300mb-layer.metadata.json").read_text())
    tag = metadata["image.name"]
    tracker = ProgressTracker("[api]", lambda _line: None)
    first_push = next(i for i, (_, text) in enumerate(objects) if "pushing manifest for" in text)
    for _ in replay(tracker, clock, objects[: first_push + 1]):
        pass
    assert tracker.pushed_digest(tag) is None, "the push had started, not finished"
    for _ in replay(tracker, clock, objects[first_push + 1 :]):
        pass
    assert tracker.pushed_digest(tag) == metadata["containerimage.digest"]
    assert tracker.pushed_digest(tag.replace(":t1", ":t2")) is None
