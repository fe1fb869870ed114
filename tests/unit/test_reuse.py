"""Reuse decisions: a target takes the image at its tag only when that image carries the same inputs' fingerprint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from release.adapters.buildx import BuildRequest
from release.adapters.registry import TaggedImage
from release.build.plan import ReleasePlan, TargetPlan, reuse_applies
from release.build.report import Built, TargetResult
from release.build.reuse import Decision, _decide, for_builder, inputs_of, labelled, merged, report, to_build
from release.errors import RegistryError
from release.imageref import ImageRef, parse_base_ref
from release.labels import INPUTS_LABEL

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
IMAGE = "sha256:" + "c" * 64
AMD64 = "linux/amd64"


def target(tmp_path: Path, name: str = "api", base: str = "debian:trixie-slim") -> TargetPlan:
    """A target building `tmp_path/ctx` (a Dockerfile from `base` and one file)."""
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(f"FROM {base} AS base\nCOPY app.py /app.py\nFROM base AS {name}\n")
    (context / "app.py").write_text("print('hello')\n")
    request = BuildRequest(
        name=name,
        context=context,
        dockerfile=context / "Dockerfile",
        stage=name,
        tags=(f"registry.test:5000/fractalops/{name}:sha-1234567",),
        build_args={"SOURCE_COMMIT": "1234567"},
        labels={"org.opencontainers.image.revision": "1234567"},
        cache_from=(),
        cache_to=None,
        platforms=(),
        builder=None,
        metadata_file=tmp_path / f"{name}.json",
    )
    return TargetPlan(name, f"registry.test:5000/fractalops/{name}", "sha-1234567", request, "values.yaml")


def resolver(digests: dict[str, str]):  # type: ignore[no-untyped-def]
    """A base image resolver answering from `digests` (by `registry/path:tag`), remembering what it was asked."""
    asked: list[str] = []

    def resolve(ref: ImageRef) -> str | None:
        asked.append(str(ref))
        return digests.get(str(ref))

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


BASES = {"docker.io/library/debian:trixie-slim": DIGEST_A}


def test_a_base_without_a_host_resolves_as_docker_hub_does() -> None:
    # `debian` is docker.io/library/debian; `owner/x` is docker.io/owner/x; a host with a dot or port stays.
    assert str(parse_base_ref("debian:trixie-slim")) == "docker.io/library/debian:trixie-slim"
    assert str(parse_base_ref("owner/tool:1")) == "docker.io/owner/tool:1"
    assert str(parse_base_ref("nexus.nexus.svc:8083/library/python:3.11")) == "nexus.nexus.svc:8083/library/python:3.11"
    assert str(parse_base_ref("localhost/x")) == "localhost/x"


def test_the_image_at_the_tag_with_the_same_inputs_is_reused(tmp_path: Path) -> None:
    plan = target(tmp_path)
    inputs = inputs_of(plan.request, resolver(BASES))
    decision = _decide(plan, resolver(BASES), lambda ref: TaggedImage(IMAGE, {INPUTS_LABEL: inputs}, AMD64))
    assert decision.reused == f"registry.test:5000/fractalops/api@{IMAGE}"
    assert decision.inputs == inputs and decision.asked


def test_an_image_for_another_platform_than_the_builder_builds_is_built_again(tmp_path: Path) -> None:
    # No platform asked for: the build targets the builder's own, which the fingerprint cannot hold. An image a
    # runner of another architecture built from the same inputs is not taken; one for this builder's platform is.
    plan = target(tmp_path)
    inputs = inputs_of(plan.request, resolver(BASES))
    decision = _decide(plan, resolver(BASES), lambda ref: TaggedImage(IMAGE, {INPUTS_LABEL: inputs}, "linux/arm64/v8"))
    assert decision.reused is not None and decision.native == "linux/arm64/v8"
    (on_amd64,) = for_builder([decision], "linux/amd64")
    assert on_amd64.reused is None
    assert on_amd64.reason == f"building: {decision.reused} is for linux/arm64/v8, the builder builds linux/amd64"
    assert for_builder([decision], "linux/arm64") == [decision]  # containerd's arm64 is arm64/v8
    assert for_builder([decision], None)[0].reused is None  # a builder whose platform cannot be told: build


def test_an_image_naming_no_platform_is_built_again_unless_platforms_were_asked_for(tmp_path: Path) -> None:
    # Platforms asked for are in the fingerprint: the image's own platform is not compared.
    plan = target(tmp_path)
    inputs = inputs_of(plan.request, resolver(BASES))
    nameless = _decide(plan, resolver(BASES), lambda ref: TaggedImage(IMAGE, {INPUTS_LABEL: inputs}, None))
    assert nameless.reused is None and "names no platform" in nameless.reason
    asked = replace(plan, request=replace(plan.request, platforms=("linux/amd64", "linux/arm64")))
    inputs = inputs_of(asked.request, resolver(BASES))
    decision = _decide(asked, resolver(BASES), lambda ref: TaggedImage(IMAGE, {INPUTS_LABEL: inputs}, None))
    assert decision.reused is not None and decision.native is None
    assert for_builder([decision], "linux/riscv64") == [decision]


def test_an_image_built_from_other_inputs_is_built_again(tmp_path: Path) -> None:
    plan = target(tmp_path)
    decision = _decide(plan, resolver(BASES), lambda ref: TaggedImage(IMAGE, {INPUTS_LABEL: "0" * 64}, AMD64))
    assert decision.reused is None and "other inputs" in decision.reason


def test_an_image_without_the_label_or_no_image_at_all_is_built(tmp_path: Path) -> None:
    plan = target(tmp_path)
    assert _decide(plan, resolver(BASES), lambda ref: TaggedImage(IMAGE, {}, AMD64)).reused is None
    nothing = _decide(plan, resolver(BASES), lambda ref: None)
    assert nothing.reused is None and "no image at registry.test:5000/fractalops/api:sha-1234567" in nothing.reason


def test_a_registry_that_cannot_answer_means_a_build(tmp_path: Path) -> None:
    def failing(ref: ImageRef) -> None:
        raise RegistryError("registry.test:5000: cannot reach the registry (http): timed out")

    decision = _decide(target(tmp_path), resolver(BASES), failing)
    assert decision.reused is None and "timed out" in decision.reason and decision.inputs is not None


def test_a_base_the_mirror_does_not_know_means_a_build_without_a_fingerprint(tmp_path: Path) -> None:
    decision = _decide(target(tmp_path), resolver({}), lambda ref: pytest.fail("no lookup without inputs"))
    assert decision.reused is None and decision.inputs is None
    assert "base image debian:trixie-slim is not in its registry" in decision.reason


def test_each_input_changes_the_fingerprint(tmp_path: Path) -> None:
    # The base's digest, a context file, a build argument, a label and the platforms each give other inputs.
    plan = target(tmp_path)
    first = inputs_of(plan.request, resolver(BASES))
    assert inputs_of(plan.request, resolver(BASES)) == first
    assert inputs_of(plan.request, resolver({"docker.io/library/debian:trixie-slim": DIGEST_B})) != first
    request = plan.request
    for changed in (
        replace(request, build_args={"SOURCE_COMMIT": "7654321"}),
        replace(request, labels={"org.opencontainers.image.revision": "7654321"}),
        replace(request, platforms=("linux/arm64",)),
        replace(request, stage="base"),
    ):
        assert inputs_of(changed, resolver(BASES)) != first
    (request.context / "app.py").write_text("print('changed')\n")
    assert inputs_of(request, resolver(BASES)) != first


def test_the_fingerprint_ignores_tags_cache_refs_and_its_own_label(tmp_path: Path) -> None:
    # Where the image goes and which cache it uses do not change what it is built from.
    request = target(tmp_path).request
    first = inputs_of(request, resolver(BASES))
    other = replace(
        request,
        tags=("elsewhere.test/x:y",),
        cache_from=("type=registry,ref=cache.test/c:api-main",),
        cache_to="type=registry,ref=cache.test/c:api-main",
        builder="shared",
    )
    assert inputs_of(other, resolver(BASES)) == first
    assert inputs_of(labelled(request, first), resolver(BASES)) == first


def test_a_pinned_base_is_not_asked_for(tmp_path: Path) -> None:
    plan = target(tmp_path, base=f"debian:trixie-slim@{DIGEST_A}")
    resolve = resolver({})
    assert inputs_of(plan.request, resolve)
    assert resolve.asked == []  # type: ignore[attr-defined]


def test_reuse_applies_to_promotions_by_default_to_every_release_with_always_and_never_with_never() -> None:
    assert reuse_applies("promote", update_gitops=True) and not reuse_applies("promote", update_gitops=False)
    assert reuse_applies("always", update_gitops=False)
    assert not reuse_applies("never", update_gitops=True)


def test_only_the_targets_not_reused_are_built_each_labelled_and_the_results_keep_the_plans_order(
    tmp_path: Path,
) -> None:
    api, worker = target(tmp_path, "api"), target(tmp_path, "worker")
    plan = ReleasePlan(None, "main", None, "cache.test", False, targets=(api, worker))
    decisions = [
        Decision("api", "1" * 64, f"registry.test:5000/fractalops/api@{IMAGE}", "reusing"),
        Decision("worker", "2" * 64, None, "building: no image at the tag yet"),
    ]
    said: list[str] = []
    taken = report(decisions, said.append)
    assert said == ["api: reusing", "worker: building: no image at the tag yet"]
    assert taken["api"].result.reused and taken["api"].result.cache_import == "unused"
    building = to_build(plan, decisions)
    assert [t.name for t in building.targets] == ["worker"]
    assert building.targets[0].request.labels[INPUTS_LABEL] == "2" * 64
    worker_result = TargetResult("worker", "r@" + IMAGE, 1.0, "ok", None, "hit", "ok", 1.0)
    order = merged(plan, taken, [Built(worker_result, "t0", "t1")])
    assert [b.result.target for b in order] == ["api", "worker"]


def test_a_release_reuse_does_not_apply_to_says_nothing_but_still_labels(tmp_path: Path) -> None:
    decision = _decide(target(tmp_path), resolver(BASES), None)
    said: list[str] = []
    assert report([decision], said.append) == {} and said == []
    assert decision.inputs is not None and not decision.asked


def test_a_password_in_a_build_argument_does_not_reach_the_fingerprint(tmp_path: Path) -> None:
    # The label is public; a hash of a short password could be guessed, so credentials are masked before hashing.
    request = target(tmp_path).request
    one = replace(request, build_args={"FRACTALOPS_PIP_INDEX_URL": "http://ci:first@nexus:8081/simple"})
    two = replace(request, build_args={"FRACTALOPS_PIP_INDEX_URL": "http://ci:second@nexus:8081/simple"})
    other_host = replace(request, build_args={"FRACTALOPS_PIP_INDEX_URL": "http://ci:first@mirror:8081/simple"})
    assert inputs_of(one, resolver(BASES)) == inputs_of(two, resolver(BASES))
    assert inputs_of(one, resolver(BASES)) != inputs_of(other_host, resolver(BASES))
