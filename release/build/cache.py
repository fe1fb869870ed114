"""The registry build cache as a release sees it: scopes and refs, the pre-probe, each build's cache outcome."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from release.imageref import parse_image_ref

if TYPE_CHECKING:
    from release.build.inputs import ReleaseInputs
    from release.build.progress import ProgressTracker
    from release.targets import Target
    from release.topology.model import Scheme, Topology

MAIN_BRANCH = "main"
CACHE_ATTRS = "mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true"
PROBE_BUDGET_S = 2.0

CacheImport = Literal["hit", "miss", "unavailable", "disabled", "unused"]  # unused: no build (reused)
CacheExport = Literal["ok", "failed", "skipped"]
Skipped = Literal["unavailable", "disabled"]


def cache_scope(branch: str) -> str:
    """A tag-safe, collision-free form of a branch name; only `main` itself maps to `main`.

    A name whose slug differs from it gets a short hash of the original, so `Main` or `feature/x` never
    write `main`'s cache, nor each other's.
    """
    if branch == MAIN_BRANCH:
        return MAIN_BRANCH
    slug = re.sub(r"[^a-z0-9_.-]+", "-", branch.lower()).strip("-.")[:60] or "branch"
    if slug == branch and slug != MAIN_BRANCH:
        return slug
    return f"{slug}-{hashlib.sha256(branch.encode()).hexdigest()[:8]}"


def cache_refs(topology: Topology, target: str, branch: str, via: str = "service") -> tuple[tuple[str, ...], str]:
    """(cache-from refs, cache-to ref) for a target: its own branch cache, plus main's when on a branch."""
    base = topology.buildcache_ref_via(via)
    own = f"{base}:{target}-{cache_scope(branch)}"
    sources = [own]
    if cache_scope(branch) != MAIN_BRANCH:
        sources.append(f"{base}:{target}-{MAIN_BRANCH}")
    return tuple(f"type=registry,ref={ref}" for ref in sources), f"type=registry,ref={own},{CACHE_ATTRS}"


def cache_probe_target(
    topology: Topology, targets: Sequence[Target], branch: str, via: str = "service"
) -> tuple[str, Scheme, tuple[str, str] | None]:
    """(cache registry, its scheme, (repository, tag) of the first target's cache manifest): what the probe asks."""
    ref = parse_image_ref(topology.buildcache_ref_via(via))
    manifest = (ref.path, f"{targets[0].name}-{cache_scope(branch)}") if targets else None
    return ref.registry, topology.registry_scheme(ref.registry), manifest


@dataclass(frozen=True)
class CacheCheck:
    """What the pre-probe decided: `skipped` is None when the builds use the cache, else why they do not."""

    skipped: Skipped | None = None
    warning: str | None = None


def probe_cache(
    topology: Topology,
    targets: Sequence[Target],
    branch: str,
    via: str,
    *,
    use_cache: bool,
    docker_config: Path | None = None,
) -> CacheCheck:
    """Ask the cache registry (ping, then the first target's cache manifest) within PROBE_BUDGET_S seconds."""
    from release.adapters.registry import RegistryClient

    if not use_cache:
        return CacheCheck("disabled")
    registry, scheme, manifest = cache_probe_target(topology, targets, branch, via)
    probe = RegistryClient(registry, scheme=scheme, docker_config=docker_config).ping(PROBE_BUDGET_S, manifest)
    if probe.reachable:
        return CacheCheck()
    return CacheCheck(
        "unavailable",
        f"warning: build cache unavailable ({probe.detail}, {probe.seconds:.1f} s); building without cache this run",
    )


def probe_for(inputs: ReleaseInputs) -> CacheCheck:
    """The pre-probe of this release's cache (or `disabled` with --no-cache)."""
    return probe_cache(
        inputs.topology,
        inputs.targets,
        inputs.branch,
        inputs.via,
        use_cache=inputs.request.use_cache,
        docker_config=inputs.loaded.context.docker_config_dir,
    )


def is_import(step: str) -> bool:
    """A cache import step (it runs before the build, so no image exists yet when it hangs)."""
    return step.startswith("importing cache")


def classify(
    skipped: Skipped | None, hung: str | None, tracker: ProgressTracker, built: bool
) -> tuple[CacheImport, CacheExport]:
    """(cache import, cache export) of one build: from the probe, a step cut at the deadline, or the progress seen."""
    if skipped is not None:
        return skipped, "skipped"
    # Steps cached by the builder's own store are not cache imports: a failed import is what it says.
    found: CacheImport = tracker.cache_import_outcome() or ("hit" if tracker.cache_hit_ratio else "miss")
    if hung is not None:
        # The cache answered the probe, then hung: a dead import is an unavailable cache, a dead export a failed one.
        return ("unavailable" if is_import(hung) else found), "failed"
    return found, "failed" if tracker.cache_export_failed() else ("ok" if built else "skipped")
