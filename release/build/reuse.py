"""Reuse: a target whose inputs equal those of the image already at its tag is not built again; that image is taken.

Each target's inputs are fingerprinted (`context_digest`: the context files BuildKit would send, the
Dockerfile, the build arguments, labels and platforms, and the digest each base image resolves to now, through the
docker-group mirror as the builders resolve it). The fingerprint goes on every image as `INPUTS_LABEL`. When reuse
applies (FRACTALOPS_REUSE) and the image at the target's tag carries the same fingerprint, the release takes that
image's digest instead of building. Anything that cannot be told for sure (a base image the mirror does not answer
for, a Dockerfile variable without a value, an unreadable file) means: build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from release.build.context import context_digest
from release.build.dockerfile import external_images
from release.errors import ReleaseError, Unknowable
from release.imageref import DOCKER_HUB, ImageRef, parse_base_ref, parse_image_ref
from release.labels import INPUTS_LABEL
from release.masking import mask_credentials

if TYPE_CHECKING:
    from pathlib import Path

    from release.adapters.buildx import BuildRequest
    from release.adapters.registry import TaggedImage
    from release.build.inputs import ReleaseInputs
    from release.build.plan import ReleasePlan, TargetPlan
    from release.build.report import Built

MIRRORED = (DOCKER_HUB, "ghcr.io")  # what the builders pull through the docker-group (topology.buildkitd)
FINGERPRINT_VERSION = 1  # bump when what goes into the fingerprint changes: older images are then built anew
LOOKUP_TIMEOUT_S = 2.0  # per registry request, as the cache probe's budget: a registry this slow means a build


@dataclass(frozen=True)
class Decision:
    """One target: its inputs' fingerprint (None: unknown) and the image taken instead of a build (None: build)."""

    target: str
    inputs: str | None
    reused: str | None  # repository@digest
    reason: str  # one line: what is reused, or why it builds
    asked: bool = True  # whether reuse applies to this release (else the fingerprint only labels the image)
    # The reused image's platform when the build would target the builder's own (no platform asked for): the
    # fingerprint cannot hold that platform, so it is compared once the builder is known (`for_builder`).
    native: str | None = None


Resolve = Callable[[ImageRef], str | None]  # a base image's tag → the digest it names now (None: not there)
Lookup = Callable[[ImageRef], "TaggedImage | None"]  # a release tag → the image it names (digest, labels, platform)


def decide(plan: ReleasePlan, inputs: ReleaseInputs) -> list[Decision]:
    """Each target's decision, in the plan's order (registry answers through the topology's schemes and mirror)."""
    from release.adapters.registry import RegistryClient

    topology, docker_config = inputs.topology, inputs.loaded.context.docker_config_dir
    clients: dict[str, RegistryClient] = {}

    def client(registry: str) -> RegistryClient:
        if registry not in clients:
            clients[registry] = RegistryClient.for_topology(
                topology, registry, docker_config=docker_config, timeout=LOOKUP_TIMEOUT_S
            )
        return clients[registry]

    mirror = f"{topology.nexus_host(inputs.via)}:{topology.nexus.docker_group_port}"
    resolved: dict[str, str | None] = {}

    def resolve(ref: ImageRef) -> str | None:
        """The digest the tag of a base image names now, asked where the builders pull it from."""
        key = str(ref)
        if key not in resolved:
            resolved[key] = client(mirror if ref.registry in MIRRORED else ref.registry).manifest_digest(ref)
        return resolved[key]

    def lookup(ref: ImageRef) -> TaggedImage | None:
        return client(ref.registry).tagged_image(ref)

    contexts: dict[tuple[Path, Path], str] = {}  # api and worker build from one context: hash it once
    return [_decide(target, resolve, lookup if plan.reuse else None, contexts) for target in plan.targets]


def _decide(
    target: TargetPlan, resolve: Resolve, lookup: Lookup | None, contexts: dict[tuple[Path, Path], str] | None = None
) -> Decision:
    """One target's fingerprint, then (when reuse applies) the image at its tag compared with it."""
    try:
        inputs = inputs_of(target.request, resolve, contexts)
    except (Unknowable, ReleaseError) as err:
        return Decision(target.name, None, None, f"building: its inputs cannot be told ({err})", lookup is not None)
    if lookup is None:
        return Decision(target.name, inputs, None, "building (FRACTALOPS_REUSE does not apply)", asked=False)
    tagged = f"{target.repository}:{target.tag}"
    ref = parse_image_ref(tagged)
    try:
        found = lookup(ref)
    except ReleaseError as err:
        return Decision(target.name, inputs, None, f"building: cannot read {tagged} ({err})")
    if found is None:
        return Decision(target.name, inputs, None, f"building: no image at {tagged} yet")
    if found.labels.get(INPUTS_LABEL) != inputs:
        return Decision(target.name, inputs, None, f"building: the image at {tagged} was built from other inputs")
    reused = str(ref.with_digest(found.digest))
    reason = f"reusing {reused}: built from the same inputs ({inputs[:12]})"
    if target.request.platforms:  # the platforms asked for are in the fingerprint
        return Decision(target.name, inputs, reused, reason)
    if found.platform is None:
        return Decision(target.name, inputs, None, f"building: the image at {tagged} names no platform")
    return Decision(target.name, inputs, reused, f"{reason}, for {found.platform}", native=found.platform)


def for_builder(decisions: Sequence[Decision], native: str | None) -> list[Decision]:
    """The decisions once the builder is known: an image reused for another platform than it builds is built anew."""
    out = []
    for decision in decisions:
        if decision.reused is not None and decision.native is not None and not _same_platform(decision.native, native):
            builds = native or "a platform that cannot be told"
            reason = f"building: {decision.reused} is for {decision.native}, the builder builds {builds}"
            decision = replace(decision, reused=None, reason=reason, native=None)
        out.append(decision)
    return out


def inputs_of(request: BuildRequest, resolve: Resolve, contexts: dict[tuple[Path, Path], str] | None = None) -> str:
    """The fingerprint of a build's inputs; Unknowable (or a registry's error) when one cannot be told.

    `contexts`: the context digests of this run so far, by (context, Dockerfile): targets sharing one hash it once.
    """
    dockerfile_text = _read(request.dockerfile)
    bases = {}
    for text in external_images(dockerfile_text, request.build_args):
        ref = parse_base_ref(text, what=f"{request.dockerfile}: base image")
        digest = ref.digest or resolve(ref)  # a pinned base names its image already
        if digest is None:
            raise Unknowable(f"base image {text} is not in its registry")
        bases[text] = digest
    labels = {k: v for k, v in request.labels.items() if k != INPUTS_LABEL}
    contexts = {} if contexts is None else contexts
    key = (request.context, request.dockerfile)
    return fingerprint(
        {
            "context": contexts[key] if key in contexts else contexts.setdefault(key, context_digest(*key)),
            "stage": request.stage,
            # A password in a package index URL never goes into a label, not even hashed (it could be guessed).
            "build_args": {k: mask_credentials(v) for k, v in request.build_args.items()},
            "labels": labels,
            "platforms": list(request.platforms),
            "bases": bases,
        }
    )


def report(decisions: Sequence[Decision], say: Callable[[str], None]) -> dict[str, Built]:
    """Say each decision where reuse was asked for; the results of the targets taken instead of built, by name."""
    from release.build.report import Built, TargetResult

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    reused: dict[str, Built] = {}
    for decision in decisions:
        if decision.asked:
            say(f"{decision.target}: {decision.reason}")
        if decision.reused is not None:
            result = TargetResult(
                target=decision.target,
                image_ref=decision.reused,
                duration_s=0.0,
                result="ok",
                error=None,
                cache_import="unused",
                cache_export="skipped",
                cache_hit_ratio=None,
                reused=True,
            )
            reused[decision.target] = Built(result, now, now)
    return reused


def to_build(plan: ReleasePlan, decisions: Sequence[Decision]) -> ReleasePlan:
    """The plan of what is still built: the targets not reused, each labelled with its inputs' fingerprint."""
    by_name = {d.target: d for d in decisions}
    targets = tuple(
        replace(t, request=labelled(t.request, by_name[t.name].inputs))
        for t in plan.targets
        if by_name[t.name].reused is None
    )
    return replace(plan, targets=targets)


def merged(plan: ReleasePlan, reused: Mapping[str, Built], built: Sequence[Built]) -> list[Built]:
    """Every target's result in the plan's order: taken, or built."""
    results = {b.result.target: b for b in built}
    taken = {**results, **reused}
    return [taken[t.name] for t in plan.targets if t.name in taken]


def _same_platform(image: str, builder: str | None) -> bool:
    """Whether an image's platform is the builder's, as containerd normalizes them (`arm64/v8` is `arm64`)."""

    def normal(platform: str) -> str:
        return platform.removesuffix("/v8") if platform.startswith("linux/arm64") else platform

    return builder is not None and normal(image) == normal(builder)


def fingerprint(parts: Mapping[str, object]) -> str:
    """sha256 hex of the parts as canonical JSON (sorted keys), with FINGERPRINT_VERSION."""
    document = {"version": FINGERPRINT_VERSION, **parts}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def labelled(request: BuildRequest, inputs: str | None) -> BuildRequest:
    """The build request with its inputs' fingerprint as a label (unchanged when it is unknown)."""
    if inputs is None:
        return request
    return replace(request, labels={**request.labels, INPUTS_LABEL: inputs})


def _read(path: Path) -> str:
    """The Dockerfile's text; Unknowable if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise Unknowable(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
