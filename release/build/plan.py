"""The release plan: what a run will build, tag, cache and pin, as plain data before anything runs (pure)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from release.adapters.buildx import BuildRequest
from release.build.cache import cache_probe_target, cache_refs
from release.imageref import parse_image_ref
from release.labels import DIRTY_LABEL, REVISION_LABEL, SOURCE_LABEL
from release.topology.env import render_env

if TYPE_CHECKING:
    from release.build.inputs import ReleaseInputs
    from release.targets import Target
    from release.topology.model import Scheme

BuildOrder = Literal["sequential", "parallel"]

DIGEST_PLACEHOLDER = "<digest of this build>"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class ReleasePlan:
    """The whole run."""

    source_commit: str | None
    branch: str
    builder: str | None
    cache_registry: str
    update_gitops: bool
    cache_probe: tuple[str, str] | None = None
    cache_scheme: Scheme = "https"
    build_order: BuildOrder = "sequential"
    reuse: bool = False  # a target whose inputs equal those of the image at its tag takes it (FRACTALOPS_REUSE)
    targets: tuple[TargetPlan, ...] = ()

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
            "build_order": self.build_order,
            "reuse_unchanged": self.reuse,
            "targets": [t.to_dict() for t in self.targets],
        }


# Build arguments every target gets: where its Dockerfile installs Debian and Python packages from (the topology).
PACKAGE_BUILD_ARGS = ("FRACTALOPS_APT_CACHE_URL", "FRACTALOPS_PIP_INDEX_URL")


def reuse_applies(mode: str, update_gitops: bool) -> bool:
    """Whether a release may take an image with the same inputs instead of building (FRACTALOPS_REUSE)."""
    return mode == "always" or (mode == "promote" and update_gitops)


def image_tag(target: Target, source_commit: str | None, run_stamp: str) -> str:
    """The tag pushed beside the digest: the configured format of the source commit."""
    if not source_commit:
        return f"build-{run_stamp}"
    return target.values.tag_format.format(short=source_commit[:7], revision=source_commit)


def make_plan(inputs: ReleaseInputs, workdir: Path) -> ReleasePlan:
    """Compute the plan from the resolved inputs (metadata files go to `workdir`); nothing runs."""
    registry, scheme, probe = cache_probe_target(inputs.topology, inputs.targets, inputs.branch, inputs.via)
    return ReleasePlan(
        source_commit=inputs.source_commit,
        branch=inputs.branch,
        builder=inputs.builder,
        cache_registry=registry,
        update_gitops=inputs.update_gitops,
        cache_probe=probe,
        cache_scheme=scheme,
        build_order=inputs.loaded.settings.build_order,
        reuse=reuse_applies(inputs.loaded.settings.reuse, inputs.update_gitops),
        targets=tuple(_target_plan(inputs, target, workdir) for target in inputs.targets),
    )


def _labels(inputs: ReleaseInputs) -> dict[str, str]:
    """The image labels: its source, its revision, and whether the input differs from that revision."""
    labels = {SOURCE_LABEL: inputs.source_url} if inputs.source_url else {}
    if inputs.source_commit:
        labels[REVISION_LABEL] = inputs.source_commit
    if inputs.dirty:
        labels[DIRTY_LABEL] = "true"  # the context differs from the source commit; promote refuses it
    return labels


def _build_args(inputs: ReleaseInputs) -> dict[str, str]:
    """The Nexus package repositories the Dockerfile installs from (rendered like the env), and the source commit."""
    package_urls = render_env(inputs.topology, inputs.via)
    args = {name: package_urls[name] for name in PACKAGE_BUILD_ARGS}
    if inputs.source_commit:
        args["SOURCE_COMMIT"] = inputs.source_commit
    return args


def _target_plan(inputs: ReleaseInputs, target: Target, workdir: Path) -> TargetPlan:
    """One target: its build request, tag and the values edits a promotion would make."""
    repository = target.repository(inputs.topology)
    tag = image_tag(target, inputs.source_commit, inputs.run_stamp)
    cache_from, cache_to = cache_refs(inputs.topology, target.name, inputs.branch, inputs.via)
    request = BuildRequest(
        name=target.name,
        context=inputs.root / target.context,
        dockerfile=inputs.root / target.context / target.dockerfile,
        stage=target.stage,
        tags=(f"{repository}:{tag}",),
        build_args=_build_args(inputs),
        labels=_labels(inputs),
        cache_from=cache_from,
        cache_to=cache_to,
        platforms=inputs.platforms,
        builder=inputs.builder,
        metadata_file=workdir / f"{target.name}.metadata.json",
    )
    keys = target.values.paths()
    edits = {keys["repository"]: repository, keys["digest"]: DIGEST_PLACEHOLDER}
    if "tag" in keys:
        edits[keys["tag"]] = tag
    if "revision" in keys and inputs.source_commit:
        edits[keys["revision"]] = inputs.source_commit
    image_registry = parse_image_ref(repository).registry
    return TargetPlan(
        target.name,
        repository,
        tag,
        request,
        target.values.file,
        edits,
        registry_scheme=inputs.topology.registry_scheme(image_registry),
    )


def without_cache(request: BuildRequest) -> BuildRequest:
    """The same build with no cache import or export (the cache is unavailable or turned off)."""
    return replace(request, cache_from=(), cache_to=None)
