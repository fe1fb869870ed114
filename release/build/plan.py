"""The release plan: what a run will build, tag, cache and pin, as plain data before anything runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from release.engine import BuildRequest
from release.targets import Target
from release.topology.model import Scheme, Topology

MAIN_BRANCH = "main"
REVISION_LABEL = "org.opencontainers.image.revision"
SOURCE_LABEL = "org.opencontainers.image.source"
DIRTY_LABEL = "io.fractalops.source.dirty"
CACHE_ATTRS = "mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true"


def web_url(remote: str) -> str | None:
    """The web (https) address of a repository from its git remote URL, credentials and `.git` dropped.

    `git@host:owner/repo.git` and `ssh://git@host:22/owner/repo.git` become `https://host/owner/repo`; an http(s)
    URL keeps its scheme and port. A local path, `file://` or anything else unknown is None.
    """
    from urllib.parse import urlsplit

    text = remote.strip()
    scp = re.fullmatch(r"(?:[^@/\s]+@)?(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>[^\s]+)", text)
    if scp is not None and "://" not in text:
        scheme, netloc, path = "https", scp["host"], scp["path"]
    else:
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh", "ssh+git") or not parts.hostname:
            return None
        web = parts.scheme in ("http", "https")
        scheme = parts.scheme if web else "https"
        netloc = parts.hostname + (f":{port}" if web and port else "")
        path = parts.path
    path = path.strip("/").removesuffix(".git").strip("/")
    url = f"{scheme}://{netloc}/{path}"
    return url if path and re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?/[\w.~%+/-]+", url) else None


def image_source(env: Mapping[str, str], root: Path) -> str | None:
    """The image's source label: $GITHUB_SERVER_URL/$GITHUB_REPOSITORY, else origin's web address, else None."""
    server, repository = env.get("GITHUB_SERVER_URL", ""), env.get("GITHUB_REPOSITORY", "")
    if server and re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        base = web_url(server.rstrip("/") + "/" + repository)
        if base is not None:
            return base
    from release.gitops.git import remote_url

    remote = remote_url(root)
    return web_url(remote) if remote else None


def cache_scope(branch: str) -> str:
    """A tag-safe, collision-free form of a branch name; only `main` itself maps to `main`.

    A name whose slug differs from it gets a short hash of the original, so `Main` or `feature/x` never
    write `main`'s cache, nor each other's.
    """
    import hashlib

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


@dataclass
class TargetPlan:
    """One target's part of the plan."""

    name: str
    repository: str
    tag: str
    request: BuildRequest
    values_file: str
    values_edits: dict[str, str] = field(default_factory=dict)
    registry_scheme: Scheme = "https"  # how the post-push check speaks to the image registry (from the topology)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --dry-run."""
        data = asdict(self)
        data["command"] = self.request.argv()
        data.pop("request")
        return data


@dataclass
class ReleasePlan:
    """The whole run."""

    source_commit: str | None
    branch: str
    builder: str | None
    cache_registry: str
    update_gitops: bool
    cache_probe: tuple[str, str] | None = None
    cache_scheme: Scheme = "https"
    targets: list[TargetPlan] = field(default_factory=list)
    target_config: dict[str, Target] | None = None  # every configured target (the promotion reads them all)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --dry-run."""
        return {
            "source_commit": self.source_commit,
            "branch": self.branch,
            "builder": self.builder,
            "cache_registry": self.cache_registry,
            "cache_scheme": self.cache_scheme,
            "update_gitops": self.update_gitops,
            "cache_probe": "{}:{}".format(*self.cache_probe) if self.cache_probe else None,
            "targets": [t.to_dict() for t in self.targets],
        }


def image_tag(target: Target, source_commit: str | None, run_stamp: str) -> str:
    """The tag pushed beside the digest: the configured format of the source commit."""
    if not source_commit:
        return f"build-{run_stamp}"
    return target.values.tag_format.format(short=source_commit[:7], revision=source_commit)


def cache_probe_target(
    topology: Topology, targets: list[Target], branch: str, via: str = "service"
) -> tuple[str, Scheme, tuple[str, str] | None]:
    """(cache registry, its scheme, (repository, tag) of the first target's cache manifest): what the probe asks."""
    from release.imageref import parse_image_ref

    ref = parse_image_ref(topology.buildcache_ref_via(via))
    manifest = (ref.path, f"{targets[0].name}-{cache_scope(branch)}") if targets else None
    return ref.registry, topology.registry_scheme(ref.registry), manifest


def make_plan(
    topology: Topology,
    targets: list[Target],
    *,
    root: Path,
    source_commit: str | None,
    branch: str,
    builder: str | None,
    platforms: tuple[str, ...],
    update_gitops: bool,
    workdir: Path,
    run_stamp: str,
    via: str = "service",
    dirty: bool = False,
    source_url: str | None = None,
) -> ReleasePlan:
    """Compute the plan; nothing runs."""
    from release.imageref import parse_image_ref

    registry, scheme, probe = cache_probe_target(topology, targets, branch, via)
    plan = ReleasePlan(
        source_commit=source_commit,
        branch=branch,
        builder=builder,
        cache_registry=registry,
        update_gitops=update_gitops,
        cache_probe=probe,
        cache_scheme=scheme,
    )
    for target in targets:
        repository = target.repository(topology)
        tag = image_tag(target, source_commit, run_stamp)
        cache_from, cache_to = cache_refs(topology, target.name, branch, via)
        labels = {SOURCE_LABEL: source_url} if source_url else {}
        build_args = {}
        if source_commit:
            labels[REVISION_LABEL] = source_commit
            build_args["SOURCE_COMMIT"] = source_commit
        if dirty:
            labels[DIRTY_LABEL] = "true"  # the context differs from the source commit; promote refuses it
        request = BuildRequest(
            context=root / target.context,
            dockerfile=root / target.context / target.dockerfile,
            target=target.target,
            tags=(f"{repository}:{tag}",),
            build_args=build_args,
            labels=labels,
            cache_from=cache_from,
            cache_to=cache_to,
            platforms=platforms,
            builder=builder,
            metadata_file=workdir / f"{target.name}.metadata.json",
        )
        keys = target.values.paths()
        edits = {keys["repository"]: repository, keys["digest"]: "<digest of this build>"}
        if "tag" in keys:
            edits[keys["tag"]] = tag
        if "revision" in keys and source_commit:
            edits[keys["revision"]] = source_commit
        image_registry = parse_image_ref(repository).registry
        plan.targets.append(
            TargetPlan(
                target.name,
                repository,
                tag,
                request,
                target.values.file,
                edits,
                registry_scheme=topology.registry_scheme(image_registry),
            )
        )
    return plan


def without_cache(request: BuildRequest) -> BuildRequest:
    """The same build with no cache import or export (the cache registry is unreachable)."""
    from dataclasses import replace

    return replace(request, cache_from=(), cache_to=None)
