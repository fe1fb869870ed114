"""The release driver: guards, preflight, plan, cache probe, concurrent builds, verified image_refs."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from release import checks
from release.errors import GuardRefusal, OperationError, ReleaseError, UsageError

PORTAL_MESSAGE = (
    "the portal image is released from yamonco/fractalops-frontend, not from this repository; run: "
    'gh workflow run "Portal GitOps Release" --repo yamonco/fractalops-frontend'
)
EVENTS_URL = "FRACTALOPS_BUILD_EVENTS_URL"
PROBE_BUDGET_S = 2.0
BUILD_ATTEMPTS = 2
# A registry's transient server error during push: worth one more (fully cached) build.
_TRANSIENT = re.compile(r"\b50[0234]\b[^\n]*(Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out)", re.I)


@dataclass
class ReleaseOptions:
    """What the caller asked for (CLI options and environment already merged)."""

    targets: tuple[str, ...] = ()
    builder: str | None = None
    platforms: tuple[str, ...] = ()
    json_output: bool = False
    dry_run: bool = False
    allow_local: bool | None = None
    update_gitops: bool | None = None
    use_cache: bool = True
    progress: str = "auto"
    topology_path: Path | None = None
    targets_path: Path | None = None
    events_file: Path | None = None
    force: bool = False
    cache_deadline_s: float = 120.0


@dataclass
class Streams:
    """Where output goes: stdout for machine output, stderr for people."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    lock: threading.Lock = field(default_factory=threading.Lock)
    board: Any = None  # a progress.LiveBoard while builds run at a terminal

    def say(self, message: str) -> None:
        """One line to stderr, whole even with concurrent builds (above the live board if one is drawn)."""
        if self.board is not None:
            self.board.print(message)
            return
        with self.lock:
            self.err.write(message + "\n")
            self.err.flush()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _branch(env: Mapping[str, str]) -> str:
    for name in ("FRACTALOPS_CACHE_BRANCH", "GITHUB_HEAD_REF", "GITHUB_REF_NAME"):
        if env.get(name):
            return env[name]
    return "main"


def _source_commit(given: tuple[str, str] | None, root: Path) -> str | None:
    """The checked FRACTALOPS_SOURCE_COMMIT or GITHUB_SHA, else HEAD of the repository."""
    if given is not None:
        return given[1]
    from release.gitops.git import head_commit

    try:
        return head_commit(root)
    except ReleaseError:
        return None


def _values_now(plan: Any, root: Path) -> dict[str, dict[str, str | None]]:
    """Target → the current value at each values key it would edit; a missing file or key is a ConfigError.

    Asked before any build, in dry runs and real ones alike: a promotion that cannot happen is found before a push.
    """
    from release.gitops.yamledit import read_values
    from release.targets import read_values_file

    values = {}
    for target in plan.targets:
        text = read_values_file(root, target.values_file)
        values[target.name] = read_values(text, list(target.values_edits), source=str(root / target.values_file))
    return values


def _dry_run_document(plan: Any, values: dict[str, dict[str, str | None]]) -> dict[str, Any]:
    """The plan as printed by --dry-run: each values edit shows the value it would replace."""
    document: dict[str, Any] = plan.to_dict()
    for target, entry in zip(plan.targets, document["targets"], strict=True):
        current = values[target.name]
        entry["values_edits"] = {key: {"from": current.get(key), "to": new} for key, new in target.values_edits.items()}
    return document


def _deadline(env: Mapping[str, str], default: float) -> float:
    """FRACTALOPS_CACHE_DEADLINE: seconds a cache import/export step may run; a bad value is a usage error."""
    text = env.get("FRACTALOPS_CACHE_DEADLINE", "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise UsageError(f"FRACTALOPS_CACHE_DEADLINE={text!r}: want seconds, more than 0 and at most 86400")
    return value


def _live_board(mode: str, env: Mapping[str, str], streams: Streams) -> Any:
    """A live board at a terminal (progress tty, or auto outside CI); None for plain lines."""
    from release.guards import in_ci
    from release.progress import LiveBoard

    if mode not in {"auto", "plain", "tty"}:
        raise UsageError(f"--progress / FRACTALOPS_PROGRESS: {mode!r} is not one of auto, plain, tty")
    tty = mode == "tty" or (mode == "auto" and streams.err.isatty() and not in_ci(env) and env.get("TERM") != "dumb")
    return LiveBoard(streams.err) if tty else None


def _ignore_further_interrupts() -> None:
    """The run is ending: more Ctrl-C (a key held down, `timeout`'s second signal) must not cut the clean-up short."""
    import signal

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _after_start_up() -> None:
    """Collect garbage again, skipping the long-lived start-up objects (the CLI turns collection off to start)."""
    import gc

    gc.freeze()
    gc.enable()


def _warm_imports(*modules: str) -> None:
    """Import modules ahead of need, on a side thread, while the main one waits on subprocesses."""
    import importlib

    for module in modules:
        importlib.import_module(module)


def select_targets(available: Mapping[str, Any], wanted: tuple[str, ...]) -> list[Any]:
    """The targets asked for (all when none named); portal and unknown names are usage errors."""
    if "portal" in wanted:
        raise UsageError(PORTAL_MESSAGE)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise UsageError(f"--target: unknown target(s) {', '.join(map(repr, unknown))}; known: {', '.join(available)}")
    names = list(dict.fromkeys(wanted)) or list(available)
    return [available[name] for name in names]


def run_release(options: ReleaseOptions, env: Mapping[str, str] | None = None, streams: Streams | None = None) -> int:
    """Run a release end to end; return the process exit status."""
    from release import engine
    from release.guards import check_guards

    env = dict(os.environ if env is None else env)
    streams = streams or Streams()
    guards = check_guards(
        env, allow_local=options.allow_local, update_gitops=options.update_gitops, building=not options.dry_run
    )
    options.cache_deadline_s = _deadline(env, options.cache_deadline_s)
    builder = options.builder or env.get("FRACTALOPS_BUILDER") or None
    # Inputs that only show their mistakes after a push are checked first.
    given_commit = checks.source_commit(env)
    platforms = checks.platforms(
        options.platforms or ((env["FRACTALOPS_PLATFORM"],) if env.get("FRACTALOPS_PLATFORM") else ()),
        "--platform" if options.platforms else "FRACTALOPS_PLATFORM",
    )
    sink = checks.events_url(EVENTS_URL, env[EVENTS_URL]) if env.get(EVENTS_URL) else None
    for variable in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):  # a dry run asks the same questions
        checks.output_file(variable, env)
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="startup") as startup:
        # The engine questions are subprocess waits: ask them while this thread reads the configuration.
        preflight = None if options.dry_run else startup.submit(engine.preflight, builder)
        startup.submit(_warm_imports, "python_on_whales")
        # Imported after the engine questions are on their way: these modules cost start-up time.
        from release.plan import image_source, make_plan
        from release.targets import default_targets_path, load_targets
        from release.topology import load_topology
        from release.topology.load import repo_root

        root = repo_root() or Path.cwd()
        source_commit = startup.submit(_source_commit, given_commit, root)
        source_url = startup.submit(image_source, env, root)
        topology = load_topology(options.topology_path)
        targets_path = options.targets_path or default_targets_path()
        available = load_targets(targets_path)
        targets = select_targets(available, options.targets)
        checks.build_files(targets, root, str(targets_path))
        dirty = startup.submit(_dirty_contexts, root, targets, given_commit[1] if given_commit else None)
        # A dry run predicts the real run's refusals, so it asks the same questions.
        settings = startup.submit(_check_promotion, root, targets, env) if guards.update_gitops else None
        branch, via = _branch(env), env.get("FRACTALOPS_NEXUS_VIA") or "service"
        # The cache probe needs only the topology: it runs while the plan is made and the engine answers.
        probe = (
            None if options.dry_run else startup.submit(_probe_cache, topology, targets, branch, via, options.use_cache)
        )
        if guards.update_gitops and {t.name for t in targets} != set(available):
            streams.say("note: promoting a subset of targets; the others stay pinned as they are")
        uncommitted = dirty.result()
        if uncommitted:
            shown = "; ".join(uncommitted)
            if guards.update_gitops and not options.force:
                raise GuardRefusal(
                    f"the build input is not the source commit ({shown}): a promotion pins what a commit describes; "
                    "commit them, or run a smoke build (FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS=0)"
                )
            from release.plan import DIRTY_LABEL

            streams.say(
                f"warning: the build input is not the source commit ({shown}); the images are labelled {DIRTY_LABEL}=true "
                "and promote refuses them without --force"
            )
        if settings is not None:
            settings.result()
        with tempfile.TemporaryDirectory(prefix="fractalops-release-") as workdir:
            plan = make_plan(
                topology,
                targets,
                root=root,
                source_commit=source_commit.result(),
                branch=branch,
                builder=builder,
                platforms=platforms,
                update_gitops=guards.update_gitops,
                workdir=Path(workdir),
                run_stamp=datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
                via=via,
                dirty=bool(uncommitted),
                source_url=source_url.result(),
            )
            plan.target_config = available  # the same targets file for the promotion (or its preview)
            values = _values_now(plan, root)
            if preflight is None or probe is None:
                import json

                streams.out.write(json.dumps(_dry_run_document(plan, values), indent=2) + "\n")
                return 0
            builder_name = preflight.result()
            cache_state, warning = probe.result()
            if warning:
                streams.say(warning)
            return _execute(plan, options, env, streams, builder_name, topology, root, cache_state, sink)


def _dirty_contexts(root: Path, targets: list[Any], given: str | None = None) -> list[str]:
    """Why the build input is not the source commit (empty when it is): changed files, another checkout, no answer."""
    from release.buildcontext import files_sent
    from release.gitops.git import dirty_paths, head_commit

    reasons: list[str] = []
    try:
        changed = dirty_paths(root, sorted({t.context for t in targets}))
        head = head_commit(root) if given else None
    except ReleaseError as err:
        return [f"git cannot tell: {err}"]
    if given and head and head != given:
        reasons.append(f"the checkout is {head[:12]}, not the source commit {given[:12]}")
    files = sorted({path for t in targets for path in files_sent(t.context, t.dockerfile, changed, root)})
    if files:
        listed = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        reasons.append(f"uncommitted: {listed}")
    return reasons


def _check_promotion(root: Path, targets: list[Any], env: Mapping[str, str]) -> None:
    """What the promotion after the builds needs, checked before them (author, push budget, clean files, remote)."""
    from release.gitops.promote import check_promotion_settings

    check_promotion_settings(
        root,
        sorted({t.values.file for t in targets}),
        remote=env.get("FRACTALOPS_GITOPS_REMOTE") or "origin",
        branch=env.get("FRACTALOPS_GITOPS_BRANCH") or "main",
    )


def _probe_cache(
    topology: Any, targets: list[Any], branch: str, via: str, use_cache: bool
) -> tuple[str | None, str | None]:
    """(None when the cache can be used, else the cache_import outcome (unavailable/disabled); a warning or None)."""
    from release.plan import cache_probe_target
    from release.registry import RegistryClient

    if not use_cache:
        return "disabled", None
    registry, scheme, manifest = cache_probe_target(topology, targets, branch, via)
    probe = RegistryClient(registry, scheme=scheme).ping(PROBE_BUDGET_S, manifest=manifest)
    if probe.reachable:
        return None, None
    return "unavailable", (
        f"warning: build cache unavailable ({probe.detail}, {probe.seconds:.1f} s); building without cache this run"
    )


def _is_import(step: str) -> bool:
    """A cache import step (it runs before the build, so no image exists yet when it hangs)."""
    return step.startswith("importing cache")


def _pushed_before_cut(target_plan: Any, request: Any, tracker: Any, step: str, deadline: float) -> str:
    """The digest of the image a build pushed before its cache step was cut off; OperationError if there is none.

    buildx was stopped before writing its metadata file, so the digest comes from BuildKit's own report of the
    push (`pushing manifest for <tag>@<digest>`, finished) for this run's tag; the caller then checks that the
    registry holds it. A cut import comes before any push: that build failed.
    """
    cut = (
        f"{target_plan.name}: '{step}' made no progress for {deadline:g} s (FRACTALOPS_CACHE_DEADLINE: no BuildKit "
        "status, no bytes to or from the cache host) and the build was stopped"
    )
    if _is_import(step):
        raise OperationError(
            f"{cut} before its image was built; the cache host answered the probe and then hung, and the engine "
            "may stay blocked until that connection closes"
        )
    for tag in request.tags:
        digest = tracker.pushed_digest(tag)
        if digest is not None:
            return str(digest)
    raise OperationError(f"{cut}; buildx reported no finished push of {', '.join(request.tags)} before it")


def _build_one(
    target_plan: Any,
    cache_state: str | None,
    streams: Streams,
    builder: str,
    deadline: float,
    under_way: threading.Event | None = None,
    stopping: threading.Event | None = None,
) -> tuple[Any, Any]:
    """Build, push and verify one target; return (TargetResult, BuildEvent-ready dict).

    `under_way` is set once buildx answers (its first progress line), or when the build ends without one.
    """
    from release import engine
    from release.imageref import parse_image_ref
    from release.outputs import TargetResult
    from release.plan import without_cache
    from release.progress import ProgressTracker
    from release.registry import RegistryClient
    from release.traffic import CacheTraffic

    request = target_plan.request if cache_state is None else without_cache(target_plan.request)
    started_at, started = _now(), time.monotonic()
    image_ref: str | None = None
    error: str | None = None
    tracker = ProgressTracker(prefix=f"[{target_plan.name}]", echo=streams.say, board=streams.board)
    hung: str | None = None
    traffic = CacheTraffic(request.cache_registries())

    def feed(line: str) -> None:
        if under_way is not None and not under_way.is_set():
            under_way.set()
        tracker.feed(line)

    def stalled() -> str | None:
        """A cache step with no BuildKit status and no bytes to or from the cache host for `deadline` seconds."""
        return tracker.stalled_cache_step(deadline, traffic.moved_at() if tracker.running_cache_steps() else None)

    try:
        for attempt in range(1, BUILD_ATTEMPTS + 1):
            if stopping is not None and stopping.is_set():
                raise OperationError(f"{target_plan.name}: interrupted before the build started")
            try:
                metadata = engine.build(request, feed, stalled)
                break
            except engine.CacheDeadlineExceeded as err:
                # The client is stopped; the engine itself may stay blocked on that connection until it closes
                # (seen with dockerd 26: even a build without cache flags waits), so a rebuild here could hang.
                hung = err.step
                metadata = {
                    "containerimage.digest": _pushed_before_cut(target_plan, request, tracker, err.step, deadline)
                }
                break
            except OperationError as err:
                if attempt == BUILD_ATTEMPTS or not _TRANSIENT.search(str(err)):
                    raise
                streams.say(f"warning: {target_plan.name}: registry answered with a server error; building once more")
            tracker = ProgressTracker(prefix=f"[{target_plan.name}]", echo=streams.say, board=streams.board)
        else:  # pragma: no cover - the loop always breaks or raises
            raise OperationError(f"{target_plan.name}: no build attempt left")
        digest = metadata.get("containerimage.digest")
        if not isinstance(digest, str):
            raise OperationError(f"{target_plan.name}: buildx metadata has no containerimage.digest")
        ref = parse_image_ref(target_plan.repository).with_digest(digest)
        confirmed = RegistryClient(ref.registry, scheme=target_plan.registry_scheme).manifest_digest(ref)
        if confirmed != digest:
            raise OperationError(f"{target_plan.name}: {ref} is not in the registry after the push")
        image_ref = str(ref)
        if hung is not None:
            streams.say(
                f"warning: {target_plan.name}: the cache export made no progress for {deadline:g} s "
                "(FRACTALOPS_CACHE_DEADLINE) and was stopped; the image had been pushed (its digest is in the registry), "
                "the cache was not written"
            )
    except ReleaseError as err:
        error = str(err)
    finally:
        traffic.close()
        if under_way is not None:
            under_way.set()
    duration = round(time.monotonic() - started, 3)
    ratio = tracker.cache_hit_ratio
    if streams.board is not None:
        outcome = "pushed and verified" if error is None else "FAILED"
        streams.board.update(tracker.prefix, f"{tracker.status_line().split(' · ')[0]} · {outcome} in {duration:.1f} s")
    if cache_state is not None:
        cache_import, cache_export = cache_state, "skipped"
    elif hung is not None:
        # The cache answered the probe, then hung: a dead import is an unavailable cache, a dead export a failed one.
        cache_import = (
            "unavailable" if _is_import(hung) else tracker.cache_import_outcome() or ("hit" if ratio else "miss")
        )
        cache_export = "failed"
    else:
        # Steps cached by the builder's own store are not cache imports: a failed import is what it says.
        cache_import = tracker.cache_import_outcome() or ("hit" if ratio else "miss")
        cache_export = "failed" if tracker.cache_export_failed() else ("ok" if error is None else "skipped")
    result = TargetResult(
        target=target_plan.name,
        image_ref=image_ref,
        duration_s=duration,
        result="ok" if error is None else "failed",  # an interrupted run relabels its failures (see _execute)
        error=error,
        cache_import=cache_import,
        cache_export=cache_export,
        cache_hit_ratio=ratio,
    )
    return result, {"started_at": started_at, "ended_at": _now(), "builder": builder}


def _execute(
    plan: Any,
    options: ReleaseOptions,
    env: Mapping[str, str],
    streams: Streams,
    builder: str,
    topology: Any,
    root: Path,
    cache_state: str | None,
    sink: Any = None,
) -> int:
    """Run the builds concurrently, then report, record and (when asked) promote."""
    streams.say(
        f"release: {', '.join(t.name for t in plan.targets)} from {plan.source_commit or 'an unknown commit'} "
        f"on builder {builder}; cache {cache_state or 'at ' + plan.cache_registry}"
    )
    streams.board = _live_board(options.progress, env, streams)
    under_way = {t.name: threading.Event() for t in plan.targets}
    stopping = threading.Event()
    futures: list[Any] = []
    with ThreadPoolExecutor(max_workers=len(plan.targets)) as pool:
        try:
            for t in plan.targets:
                futures.append(
                    pool.submit(
                        _build_one,
                        t,
                        cache_state,
                        streams,
                        builder,
                        options.cache_deadline_s,
                        under_way[t.name],
                        stopping,
                    )
                )
            # Side work waits until every build is under way: start-up time is the one thing the builds wait on.
            for future, event in zip(futures, under_way.values(), strict=True):
                while not event.wait(0.05) and not future.done():
                    pass
            _after_start_up()
            # The promotion preview (smoke builds) or the GitOps modules (promotion) get ready while the builds run.
            preview = _start_preview(plan, topology, root) if not plan.update_gitops else None
            if plan.update_gitops:
                threading.Thread(target=_warm_imports, args=("release.gitops.promote",), daemon=True).start()
            outcomes = [future.result() for future in futures]
        except KeyboardInterrupt:
            # Stop the builds, record them as interrupted, then let the interrupt end the run (exit 130/143).
            from release import engine

            _ignore_further_interrupts()
            stopping.set()
            engine.stop_builds()
            outcomes = [future.result() for future in futures]  # the builds started before the interrupt
            for result, _ in outcomes:
                if result.result == "failed":  # stopped by the interrupt (Ctrl-C reaches buildx too)
                    result.result = "interrupted"
                    result.error = f"interrupted (the build stopped: {result.error})"
            streams.board = None
            if outcomes:
                _record_events(_events(plan, outcomes, env), options, sink, streams)
            raise
    streams.board = None  # the final status lines stay on screen; from here on, plain lines
    from release.outputs import image_ref_lines, json_document, step_summary, write_github_outputs, write_step_summary

    results = [result for result, _ in outcomes]
    _record_events(_events(plan, outcomes, env), options, sink, streams)
    failed = [r for r in results if r.result != "ok"]
    for r in failed:
        streams.say(f"error: {r.target}: {r.error}")
    promotion: dict[str, Any] | None = None
    if not failed:
        promotion = _gitops(plan, results, options, env, streams, topology, root, preview)
    extra = {"source_commit": plan.source_commit, "builder": builder, "gitops": promotion}
    streams.out.write(json_document(results, extra) if options.json_output else image_ref_lines(results))
    streams.out.flush()
    if env.get("GITHUB_OUTPUT"):
        write_github_outputs(Path(env["GITHUB_OUTPUT"]), results)
    if env.get("GITHUB_STEP_SUMMARY"):
        title = "FractalOps runtime release" + (" (promoted)" if plan.update_gitops and not failed else " (smoke)")
        write_step_summary(Path(env["GITHUB_STEP_SUMMARY"]), step_summary(results, title))
    if promotion is not None and promotion.get("failed"):
        return int(promotion.get("exit_code", 1))
    return 1 if failed else 0


def _events(plan: Any, outcomes: list[tuple[Any, Any]], env: Mapping[str, str]) -> list[Any]:
    """One Build Plane Event per target build."""
    from release.events import BuildEvent

    return [
        BuildEvent(
            target=r.target,
            image_ref=r.image_ref,
            source_commit=plan.source_commit,
            builder=extra["builder"],
            started_at=extra["started_at"],
            ended_at=extra["ended_at"],
            duration_s=r.duration_s,
            result=r.result,
            error=r.error,
            cache_import=r.cache_import,
            cache_export=r.cache_export,
            cache_hit_ratio=r.cache_hit_ratio,
            ci_run_id=env.get("GITHUB_RUN_ID"),
        )
        for r, extra in outcomes
    ]


def _record_events(events: list[Any], options: ReleaseOptions, sink: Any, streams: Streams) -> None:
    """Append the events to the JSONL file and POST them when a sink is set; never fail the release."""
    from release.events import append_events, default_events_file, post_events

    path = options.events_file or default_events_file()
    try:
        append_events(events, path)
    except OSError as err:
        where = err.filename or path
        streams.say(f"warning: cannot append build events to {path}: {where}: {err.strerror}")
    if sink is not None:
        post_events(events, sink, streams.say)


_PREVIEW_SALT = "fractalops-release promotion preview"


def _placeholder(target: str) -> str:
    """A digest that stands for a target's not-yet-built image while the preview is computed."""
    import hashlib

    return "sha256:" + hashlib.sha256(f"{_PREVIEW_SALT} {target}".encode()).hexdigest()


class _PreviewRegistry:
    """The registry as the preview sees it: the placeholder digests exist; anything else is asked of the registry."""

    def __init__(self, registry: str, placeholders: set[str], topology: Any) -> None:
        """Wrap the real client of `registry` (its scheme from the topology)."""
        from release.registry import RegistryClient

        self.real = RegistryClient.for_topology(topology, registry)
        self.placeholders = placeholders

    def manifest_digest(self, ref: Any) -> str | None:
        """A placeholder is present (the driver confirms the real digest itself after the push)."""
        return str(ref.digest) if ref.digest in self.placeholders else self.real.manifest_digest(ref)

    def image_labels(self, ref: Any) -> dict[str, str]:
        """Labels come from the registry."""
        return self.real.image_labels(ref)


def _promotion_args(plan: Any, topology: Any, root: Path, targets: Any) -> dict[str, Any]:
    """What every promotion (or preview) of this release shares: repository, configuration, newest-wins policy."""
    return {
        "repo_root": root,
        "topology": topology,
        "targets": plan.target_config,
        "source_commits": {name: plan.source_commit for name in targets} if plan.source_commit else None,
        "policy": "monotonic",
    }


def _start_preview(plan: Any, topology: Any, root: Path) -> Any:
    """Compute the promotion preview while the builds run; the real digests replace the placeholders afterwards.

    Everything, imports included, happens on a side thread: the builds start without waiting for it.
    """
    images = {t.name: f"{t.repository}@{_placeholder(t.name)}" for t in plan.targets}
    placeholders = {_placeholder(t.name) for t in plan.targets}

    def preview() -> Any:
        from release.gitops.promote import plan_promotion

        return plan_promotion(
            images,
            **_promotion_args(plan, topology, root, images),
            registry_client_factory=lambda registry: _PreviewRegistry(registry, placeholders, topology),
        )

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview")
    future = pool.submit(preview)
    pool.shutdown(wait=False)
    return future


def _gitops(
    plan: Any,
    results: list[Any],
    options: ReleaseOptions,
    env: Mapping[str, str],
    streams: Streams,
    topology: Any,
    root: Path,
    preview: Any = None,
) -> dict[str, Any] | None:
    """Promote the built images when GitOps updates are on; otherwise print the diff a promotion would make."""
    from release.gitops.promote import promote
    from release.gitops.record import append_record, build_record, default_record_path

    images = {r.target: r.image_ref for r in results if r.image_ref}
    shared = _promotion_args(plan, topology, root, images)
    if not plan.update_gitops:
        files = {t.name: root / t.values_file for t in plan.targets}
        already = any(
            ref.rsplit("@", 1)[1] in (files[name].read_text(encoding="utf-8") if files[name].exists() else "")
            for name, ref in images.items()
        )
        try:
            if already or preview is None:  # a pinned digest came back: plan with the real refs (a no-op diff)
                from release.gitops.promote import plan_promotion

                planned = plan_promotion(images, **shared)
            else:
                planned = preview.result()
        except ReleaseError as err:
            streams.say(f"note: no promotion preview: {err}")
            return None
        diff = planned.diff
        for target, image_ref in images.items():
            diff = diff.replace(_placeholder(target), image_ref.rsplit("@", 1)[1])
        streams.say("promotion preview (smoke build: GitOps untouched; this is the diff a promotion would commit):")
        streams.say(diff.rstrip("\n") or "(no change: the values files already pin these images)")
        return None
    try:
        result = promote(
            images,
            **shared,
            force=options.force,
            remote=env.get("FRACTALOPS_GITOPS_REMOTE") or "origin",
            branch=env.get("FRACTALOPS_GITOPS_BRANCH") or "main",
        )
    except ReleaseError as err:
        streams.say(f"error: GitOps update failed: {err}")
        return {"failed": True, "error": str(err), "exit_code": err.exit_code}
    record = build_record(result)
    where = append_record(record, default_record_path(options.events_file))  # beside this run's build events
    if result.noop:
        streams.say("gitops: the values files already pin these images; nothing committed")
    else:
        streams.say(f"gitops: {result.commit} pushed after {result.retries} retries; record in {where}")
    return record
