"""The runtime release, top to bottom: inputs → plan → (dry run: print it) → reuse → builds → events → promotion → report."""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from release.adapters.buildx import BuildEngine, Buildx
from release.build import reuse
from release.build.cache import probe_for
from release.build.execute import BuildSession, build_all
from release.build.inputs import ReleaseRequest, check, resolve
from release.build.plan import make_plan
from release.build.promotion import current_values, dry_run_document, promote_built, show_preview, start_preview
from release.build.report import Streams, announce, cache_streaks, publish, record_events
from release.settings import Loaded


def run_release(request: ReleaseRequest, loaded: Loaded, streams: Streams, engine: BuildEngine | None = None) -> int:
    """Run a release end to end; return the process exit status (`engine` None: the real buildx)."""
    engine = engine or Buildx()
    checked = check(request, loaded)  # what would fail only after a push, before any file is read
    # Start-up: the engine's and the cache's answers are waits; they come in while this thread reads the inputs.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="startup") as early:
        preflight = None if request.dry_run else early.submit(engine.preflight, loaded.settings.builder)
        inputs = resolve(checked, streams.say)
        with tempfile.TemporaryDirectory(prefix="fractalops-release-") as workdir:
            plan = make_plan(inputs, Path(workdir))
            values = current_values(plan, inputs.root)
            if preflight is None:  # a dry run: the plan, with the values it would replace, is the answer
                streams.out.write(json.dumps(dry_run_document(plan, values), indent=2) + "\n")
                return 0
            probing = early.submit(probe_for, inputs)
            deciding = early.submit(reuse.decide, plan, inputs)
            builder, cache = preflight.result(), probing.result()
            decisions = reuse.for_builder(deciding.result(), engine.native_platform())
            announce(plan, builder, cache, streams.say)
            reused = reuse.report(decisions, streams.say)
            preview = None if plan.update_gitops else start_preview(plan, inputs)
            deadline, docker_config = loaded.settings.cache_deadline, loaded.context.docker_config_dir
            min_rate = loaded.settings.cache_min_rate
            visible = engine.sees_cache_traffic(loaded.context.docker_host)
            session = BuildSession(engine, builder, cache.skipped, deadline, streams, docker_config, min_rate, visible)
            with streams.live_board(loaded):
                built, interrupt = build_all(reuse.to_build(plan, decisions), session)
            built = reuse.merged(plan, reused, built)
            record_events(built, plan, inputs, builder, streams)
            notes = cache_streaks([b.result for b in built], plan, inputs, streams)
            if interrupt is not None:
                raise interrupt  # exit 130/143, once the builds are stopped and recorded
    results = [b.result for b in built]
    ok = all(r.result == "ok" for r in results)
    promotion = promote_built(results, inputs, streams.say) if ok and plan.update_gitops else None
    if ok and preview is not None:
        show_preview(preview, results, inputs, streams.say)
    return publish(results, inputs, builder, promotion, streams, notes)
