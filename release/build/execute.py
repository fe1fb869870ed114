"""Run a plan's builds side by side: each attempt, its retry, the digest check, the cache outcome, interrupts."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from release.adapters.buildx import BuildEngine, BuildRequest, CacheDeadlineExceeded
from release.build.cache import Skipped, classify, is_import
from release.build.plan import ReleasePlan, TargetPlan, without_cache
from release.build.progress import ProgressTracker
from release.build.report import Built, Streams, TargetResult
from release.build.traffic import CacheTraffic
from release.errors import OperationError, ReleaseError
from release.imageref import parse_image_ref

BUILD_ATTEMPTS = 2
# A registry's transient server error during push: worth one more (fully cached) build.
_TRANSIENT = re.compile(r"\b50[0234]\b[^\n]*(Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out)", re.I)


@dataclass
class CacheCut:
    """Which cache step of this run the deadline cut, if one was: the builds that start afterwards skip the cache."""

    step: str | None = None  # "<target>: '<step name>'"


@dataclass(frozen=True)
class BuildSession:
    """What every build of a run shares: the engine, the builder, the cache decision, the deadline, the output."""

    engine: BuildEngine
    builder: str
    skipped: Skipped | None  # the cache is not used this run (unavailable or disabled); None: it is
    deadline_s: float
    streams: Streams
    docker_config: Path | None = None
    # Bytes per second a cache step's bytes must keep up with to count as progress (FRACTALOPS_CACHE_MIN_RATE).
    min_rate: float = 0.0
    # Whether the builder's connections to the cache host show here (Buildx.sees_cache_traffic); else statuses alone.
    bytes_visible: bool = True
    cut: CacheCut = field(default_factory=CacheCut)


class _Watch:
    """One target's progress across its attempts: the current tracker and the cache step cut at the deadline."""

    def __init__(self, name: str, streams: Streams, on_cache_exported: Callable[[], None]) -> None:
        """A fresh tracker for the first attempt; `on_cache_exported` is called when a cache export step ends."""
        self.name, self.streams, self.on_cache_exported = name, streams, on_cache_exported
        self.hung: str | None = None
        self.restart()

    def restart(self) -> None:
        """A new attempt starts counting from nothing."""
        self.tracker = ProgressTracker(
            prefix=f"[{self.name}]",
            echo=self.streams.say,
            board=self.streams.board,
            on_cache_exported=self.on_cache_exported,
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Builds(threading.Thread):
    """Starts every build and collects the results, off the main thread.

    Python raises an interrupt in the main thread only, so an interrupt can never land between starting a build
    and counting it: the main thread just waits for `finished`.
    """

    def __init__(self, plan: ReleasePlan, session: BuildSession, stopping: threading.Event) -> None:
        """Nothing started yet."""
        super().__init__(name="builds", daemon=True)
        self.plan, self.session, self.stopping = plan, session, stopping
        self.built: list[Built] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        """The targets one after another, or all at once (`build_order`); the results in the plan's order.

        One after another, the next build starts when the one before has finished its cache export (BuildKit's
        solve and cache records are done then), so its push and digest check overlap the next build's start.
        """
        parallel = self.plan.build_order == "parallel"
        try:
            with ThreadPoolExecutor(max_workers=max(len(self.plan.targets), 1), thread_name_prefix="build") as pool:
                futures = []
                for target in self.plan.targets:
                    exported = threading.Event()
                    futures.append(pool.submit(build_target, target, self.session, self.stopping, exported))
                    if not parallel:
                        exported.wait()
                self.built = [future.result() for future in futures]
        except BaseException as err:  # a bug in a build: the main thread raises it
            self.error = err
        finally:
            self.finished.set()


def build_all(plan: ReleasePlan, session: BuildSession) -> tuple[list[Built], KeyboardInterrupt | None]:
    """Build every target in the plan's order; (the builds, the interrupt that stopped them, if one did).

    On Ctrl-C or SIGTERM the running builds are stopped, and those that ended by it are relabelled `interrupted`.
    """
    stopping = threading.Event()
    builds = _Builds(plan, session, stopping)
    interrupt: KeyboardInterrupt | None = None
    try:
        builds.start()
        builds.finished.wait()
    except KeyboardInterrupt as caught:
        interrupt = caught
        _ignore_further_interrupts()
        stopping.set()
        session.engine.stop_all()
        if builds.ident is not None:  # it runs (an interrupt before it ran leaves nothing to wait for)
            builds.finished.wait()
    if builds.error is not None:
        raise builds.error
    return ([_relabel(b) for b in builds.built] if interrupt else builds.built), interrupt


def build_target(
    target: TargetPlan, session: BuildSession, stopping: threading.Event, exported: threading.Event
) -> Built:
    """Build, push and verify one target; whatever happens, its result.

    `exported` is set once the build's cache export has ended, or the build has (the next target may start then).
    """
    try:
        return _build_target(target, session, stopping, exported)
    finally:
        exported.set()


def _build_target(
    target: TargetPlan, session: BuildSession, stopping: threading.Event, exported: threading.Event
) -> Built:
    """`build_target`'s body."""
    started_at, started = _now(), time.monotonic()
    skipped = session.skipped
    if skipped is None and session.cut.step is not None:
        # One cut per release: a cache host too slow or silent for one target would cost every later one the deadline.
        skipped = "unavailable"
        session.streams.say(
            f"warning: {target.name}: building without cache this run: the deadline cut {session.cut.step}"
        )
    request = target.request if skipped is None else without_cache(target.request)
    watch = _Watch(target.name, session.streams, exported.set)
    image_ref: str | None = None
    error: str | None = None
    try:
        digest = attempt_with_retry(target, request, session, watch, stopping)
        image_ref = verify(target, digest, session.docker_config)
        if watch.hung is not None:
            session.streams.say(
                f"warning: {target.name}: the cache export made no progress for {session.deadline_s:g} s "
                f"(FRACTALOPS_CACHE_DEADLINE; {_bytes_phrase(session.min_rate)}) and was stopped; the image had been pushed (its digest is in the registry), "
                "the cache was not written"
            )
    except ReleaseError as err:
        error = str(err)
    duration = round(time.monotonic() - started, 3)
    tracker = watch.tracker
    if session.streams.board is not None:
        outcome = "pushed and verified" if error is None else "FAILED"
        status = tracker.status_line().split(" · ")[0]
        session.streams.board.update(tracker.prefix, f"{status} · {outcome} in {duration:.1f} s")
    cache_import, cache_export = classify(skipped, watch.hung, tracker, built=error is None)
    result = TargetResult(
        target=target.name,
        image_ref=image_ref,
        duration_s=duration,
        result="ok" if error is None else "failed",  # an interrupted run relabels its failures (see build_all)
        error=error,
        cache_import=cache_import,
        cache_export=cache_export,
        cache_hit_ratio=tracker.cache_hit_ratio,
    )
    return Built(result, started_at, _now())


def attempt_with_retry(
    target: TargetPlan, request: BuildRequest, session: BuildSession, watch: _Watch, stopping: threading.Event
) -> str:
    """The pushed digest, building once more after a registry's transient server error."""
    for attempt in range(1, BUILD_ATTEMPTS + 1):
        if stopping.is_set():
            raise OperationError(f"{target.name}: interrupted before the build started")
        try:
            return attempt_once(request, session, watch)
        except OperationError as err:
            if attempt == BUILD_ATTEMPTS or not _TRANSIENT.search(str(err)):
                raise
            session.streams.say(f"warning: {target.name}: registry answered with a server error; building once more")
            watch.restart()
    raise OperationError(f"{target.name}: no build attempt left")  # pragma: no cover - the loop returns or raises


def attempt_once(request: BuildRequest, session: BuildSession, watch: _Watch) -> str:
    """One build with its cache steps watched; the digest it pushed (also when an export was cut after the push)."""
    traffic = CacheTraffic(request.cache_registries() if session.bytes_visible else (), session.min_rate)

    def stalled() -> str | None:
        """A cache step that went silent (no BuildKit status, no bytes at the minimum rate, for the deadline) or crawls."""
        quiet, age = watch.tracker.cache_quiet_s(), watch.tracker.cache_step_age_s()
        # Bytes are counted only once a cache step has been quiet, or has run, for a while: most finish long before
        # (the counters' library alone takes a third of a second to load, which a warm release should not wait for).
        counting = (quiet is not None and quiet >= _count_bytes_after(session.deadline_s)) or (
            age is not None and age >= _judge_rate_after(session.deadline_s)
        )
        moved = traffic.moved_at() if counting else None
        silent = watch.tracker.stalled_cache_step(session.deadline_s, moved)
        return silent or watch.tracker.crawling_cache_step(session.deadline_s, traffic.too_slow_since)

    try:
        metadata = session.engine.build(request, watch.tracker.feed, stalled)
    except CacheDeadlineExceeded as err:
        # The client is stopped; the engine itself may stay blocked on that connection until it closes
        # (seen with dockerd 26: even a build without cache flags waits), so a rebuild here could hang.
        watch.hung = err.step
        session.cut.step = f"{request.name}: '{err.step}'"
        return pushed_before_cut(request, watch.tracker, err.step, session.deadline_s, session.min_rate)
    finally:
        traffic.close()
    digest = metadata.get("containerimage.digest")
    if not isinstance(digest, str):
        raise OperationError(f"{request.name}: buildx metadata has no containerimage.digest")
    return digest


def _count_bytes_after(deadline_s: float) -> float:
    """How long a cache step may be quiet before its bytes are counted: a second, or a quarter of a short deadline."""
    return min(1.0, deadline_s / 4)


def _judge_rate_after(deadline_s: float) -> float:
    """How long a cache step runs before its bytes are counted for its average rate: 10 s, or a quarter of the deadline."""
    return min(10.0, deadline_s / 4)


def pushed_before_cut(
    request: BuildRequest, tracker: ProgressTracker, step: str, deadline: float, min_rate: float = 0.0
) -> str:
    """The digest of the image a build pushed before its cache step was cut off; OperationError if there is none.

    buildx was stopped before writing its metadata file, so the digest comes from BuildKit's own report of the
    push (`pushing manifest for <tag>@<digest>`, finished) for this run's tag; the caller then checks that the
    registry holds it. A cut import comes before any push: that build failed.
    """
    cut = (
        f"{request.name}: '{step}' made no progress for {deadline:g} s (FRACTALOPS_CACHE_DEADLINE: no BuildKit "
        f"status, {_bytes_phrase(min_rate)}) and the build was stopped"
    )
    if is_import(step):
        raise OperationError(
            f"{cut} before its image was built; the cache host answered the probe and then hung, and the engine "
            "may stay blocked until that connection closes"
        )
    for tag in request.tags:
        digest = tracker.pushed_digest(tag)
        if digest is not None:
            return digest
    raise OperationError(f"{cut}; buildx reported no finished push of {', '.join(request.tags)} before it")


def _bytes_phrase(min_rate: float) -> str:
    """How the cut describes the bytes it saw: none, or too few for FRACTALOPS_CACHE_MIN_RATE."""
    if min_rate <= 0:
        return "no bytes to or from the cache host"
    return f"bytes to or from the cache host below FRACTALOPS_CACHE_MIN_RATE={min_rate / 1000:g}KB/s"


def verify(target: TargetPlan, digest: str, docker_config: Path | None) -> str:
    """The image_ref `repository@digest`, once the registry confirms it holds that digest."""
    from release.adapters.registry import RegistryClient

    ref = parse_image_ref(target.repository).with_digest(digest)
    client = RegistryClient(ref.registry, scheme=target.registry_scheme, docker_config=docker_config)
    if client.manifest_digest(ref) != digest:
        raise OperationError(f"{target.name}: {ref} is not in the registry after the push")
    return str(ref)


def _relabel(built: Built) -> Built:
    """A build that failed while the release was being interrupted was stopped by it: `interrupted`."""
    result = built.result
    if result.result == "failed":
        result.result = "interrupted"
        result.error = f"interrupted (the build stopped: {result.error})"
    return built


def _ignore_further_interrupts() -> None:
    """The run is ending: more Ctrl-C (a key held down, `timeout`'s second signal) must not cut the clean-up short."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
