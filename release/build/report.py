"""What a release prints and publishes: progress streams, image_ref lines or JSON, events, GitHub files."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

from release import github

if TYPE_CHECKING:
    from release.build.cache import CacheCheck, CacheExport, CacheImport
    from release.build.inputs import ReleaseInputs
    from release.build.plan import ReleasePlan
    from release.build.progress import LiveBoard
    from release.build.promotion import Promotion
    from release.settings import Loaded

Result = Literal["ok", "failed", "interrupted"]


@dataclass
class Streams:
    """Where output goes: stdout for machine output, stderr for people (through the live board when drawn)."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    lock: threading.Lock = field(default_factory=threading.Lock)
    board: LiveBoard | None = None  # while builds run at a terminal

    def say(self, message: str) -> None:
        """One line to stderr, whole even with concurrent builds (above the live board if one is drawn)."""
        if self.board is not None:
            self.board.print(message)
            return
        with self.lock:
            self.err.write(message + "\n")
            self.err.flush()

    @contextmanager
    def live_board(self, loaded: Loaded) -> Iterator[None]:
        """While builds run: a live board at a terminal (progress tty, or auto outside CI), else plain lines."""
        from release.build.progress import board_for

        context = loaded.context
        self.board = board_for(loaded.settings.progress, self.err, in_ci=context.in_ci, term=context.term)
        try:
            yield
        finally:
            self.board = None  # the final status lines stay on screen; from here on, plain lines


@dataclass
class TargetResult:
    """The outcome of one target in a run."""

    target: str
    image_ref: str | None
    duration_s: float
    result: Result
    error: str | None
    cache_import: CacheImport
    cache_export: CacheExport
    cache_hit_ratio: float | None
    reused: bool = False  # no build: the image at the tag was built from the same inputs


@dataclass(frozen=True)
class Built:
    """One target's build: its result, and when it ran (for its Build Plane Event)."""

    result: TargetResult
    started_at: str
    ended_at: str


def image_ref_lines(results: Sequence[TargetResult]) -> str:
    """Exactly one `image_ref=…` line per built target, nothing else."""
    return "".join(f"image_ref={r.image_ref}\n" for r in results if r.image_ref)


def json_document(results: Sequence[TargetResult], extra: dict[str, Any]) -> str:
    """The --json document."""
    return json.dumps({**extra, "targets": [asdict(r) for r in results]}, indent=2, sort_keys=True) + "\n"


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell and shows as typed (no pipes, lines, HTML or markup)."""
    flat = " ".join(text.split())
    return "".join("\\" + ch if ch in "\\`*_[]<>|#!~" else ch for ch in flat)


def step_summary(results: Sequence[TargetResult], title: str, notes: Sequence[str] = ()) -> str:
    """A Markdown table: target, image_ref, duration, cache outcome; then a warning line per note."""
    rows = [f"### {title}", "", "| target | image_ref | duration | cache |", "| --- | --- | --- | --- |"]
    for r in results:
        ratio = "" if r.cache_hit_ratio is None else f", {r.cache_hit_ratio * 100:.0f}% steps cached"
        ref = f"`{r.image_ref}`" if r.image_ref else f"failed: {_cell(r.error or 'unknown error')}"
        cache = (
            "not built: same inputs as this image" if r.reused else f"import {r.cache_import}, export {r.cache_export}"
        )
        rows.append(f"| {r.target} | {ref} | {r.duration_s:.1f} s | {cache}{ratio} |")
    rows += ["", *(f"> **Warning:** {note}" for note in notes)] if notes else []
    return "\n".join(rows) + "\n"


def cache_streaks(
    results: Sequence[TargetResult], plan: ReleasePlan, inputs: ReleaseInputs, streams: Streams
) -> list[str]:
    """A note per target whose build cache was unavailable in the last N releases in a row (this one included).

    Said as a warning line, and in GitHub Actions as a `::warning::` annotation; never fails the release.
    """
    from release.errors import ReleaseError
    from release.events import read_events, unavailable_streak

    limit = inputs.loaded.settings.cache_unavailable_warn_after
    if not any(r.cache_import == "unavailable" for r in results):
        return []
    try:
        events = read_events(inputs.loaded.events_file).events
    except ReleaseError as err:
        streams.say(f"warning: cannot count releases without the build cache: {err}")
        return []
    streaks = {r.target: unavailable_streak(events, r.target) for r in results if r.cache_import == "unavailable"}
    notes = [
        f"{target}: the build cache at {plan.cache_registry} was unavailable in the last {streak} releases in a row "
        f"(FRACTALOPS_CACHE_UNAVAILABLE_WARN_AFTER={limit}); each of them built cold"
        for target, streak in streaks.items()
        if streak >= limit
    ]
    for note in notes:
        streams.say(f"warning: {note}")
        if inputs.loaded.context.github_actions:
            streams.say(github.warning_annotation("Build cache unavailable", note))
    return notes


def announce(plan: ReleasePlan, builder: str, cache: CacheCheck, say: Callable[[str], None]) -> None:
    """The cache warning, if any, and one line saying what is built, from which commit, where."""
    if cache.warning:
        say(cache.warning)
    say(
        f"release: {', '.join(t.name for t in plan.targets)} from {plan.source_commit or 'an unknown commit'} "
        f"on builder {builder}; cache {cache.skipped or 'at ' + plan.cache_registry}"
    )


def record_events(
    built: Sequence[Built], plan: ReleasePlan, inputs: ReleaseInputs, builder: str, streams: Streams
) -> None:
    """One Build Plane Event per build, appended to the JSONL file and POSTed when a sink is set; never fails."""
    from release.events import BuildEvent, append_events, post_events

    if not built:
        return
    events = [
        BuildEvent(
            target=b.result.target,
            image_ref=b.result.image_ref,
            source_commit=plan.source_commit,
            builder=builder,
            started_at=b.started_at,
            ended_at=b.ended_at,
            duration_s=b.result.duration_s,
            result=b.result.result,
            error=b.result.error,
            cache_import=b.result.cache_import,
            cache_export=b.result.cache_export,
            cache_hit_ratio=b.result.cache_hit_ratio,
            ci_run_id=inputs.loaded.context.github_run_id,
            reused=b.result.reused,
        )
        for b in built
    ]
    path = inputs.loaded.events_file
    try:
        append_events(events, path)
    except OSError as err:
        streams.say(f"warning: cannot append build events to {path}: {err.filename or path}: {err.strerror}")
    if inputs.sink is not None:
        post_events(events, inputs.sink, streams.say)


def publish(
    results: Sequence[TargetResult],
    inputs: ReleaseInputs,
    builder: str,
    promotion: Promotion | None,
    streams: Streams,
    notes: Sequence[str] = (),
) -> int:
    """Print the image_refs (or the JSON document), append them and the notes to the GitHub files; the exit status."""
    failed = any(r.result != "ok" for r in results)
    for r in results:
        if r.result != "ok":
            streams.say(f"error: {r.target}: {r.error}")
    gitops = promotion.as_json() if promotion is not None else None
    extra = {"source_commit": inputs.source_commit, "builder": builder, "gitops": gitops}
    streams.out.write(json_document(results, extra) if inputs.request.json_output else image_ref_lines(results))
    streams.out.flush()
    context = inputs.loaded.context
    if context.github_output is not None:
        github.append_image_refs(context.github_output, {r.target: r.image_ref for r in results if r.image_ref})
    if context.github_step_summary is not None:
        title = "FractalOps runtime release" + (" (promoted)" if inputs.update_gitops and not failed else " (smoke)")
        github.append_summary(context.github_step_summary, step_summary(results, title, notes))
    if promotion is not None and promotion.exit_code:
        return promotion.exit_code
    return 1 if failed else 0
