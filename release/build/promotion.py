"""The bridge from builds to GitOps: the values a promotion would edit, its preview while building, the promotion."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from release.errors import ReleaseError

if TYPE_CHECKING:
    from pathlib import Path

    from release.build.inputs import ReleaseInputs
    from release.build.plan import ReleasePlan
    from release.build.report import TargetResult
    from release.gitops.changes import PromotionPlan
    from release.imageref import ImageRef

Say = Callable[[str], None]
_PREVIEW_SALT = "fractalops-release promotion preview"


@dataclass(frozen=True)
class Promotion:
    """What the promotion after the builds did: its release record, or the error that stopped it."""

    record: dict[str, Any] | None = None
    error: ReleaseError | None = None

    @property
    def exit_code(self) -> int:
        """0 when it landed (or found nothing to change), else the error's exit code."""
        return self.error.exit_code if self.error is not None else 0

    def as_json(self) -> dict[str, Any] | None:
        """The `gitops` field of the --json document."""
        if self.error is not None:
            return {"failed": True, "error": str(self.error), "exit_code": self.error.exit_code}
        return self.record


def current_values(plan: ReleasePlan, root: Path) -> dict[str, dict[str, str | None]]:
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


def dry_run_document(plan: ReleasePlan, values: Mapping[str, Mapping[str, str | None]]) -> dict[str, Any]:
    """The plan as printed by --dry-run: each values edit shows the value it would replace."""
    document = plan.to_dict()
    for target, entry in zip(plan.targets, document["targets"], strict=True):
        current = values[target.name]
        entry["values_edits"] = {key: {"from": current.get(key), "to": new} for key, new in target.values_edits.items()}
    return document


def _placeholder(target: str) -> str:
    """A digest that stands for a target's not-yet-built image while the preview is computed."""
    return "sha256:" + hashlib.sha256(f"{_PREVIEW_SALT} {target}".encode()).hexdigest()


class _PreviewRegistry:
    """The registry as the preview sees it: the placeholder digests exist; anything else is asked of the registry."""

    def __init__(self, registry: str, placeholders: set[str], inputs: ReleaseInputs) -> None:
        """Wrap the real client of `registry` (its scheme from the topology)."""
        from release.adapters.registry import RegistryClient

        docker_config = inputs.loaded.context.docker_config_dir
        self.real = RegistryClient.for_topology(inputs.topology, registry, docker_config=docker_config)
        self.placeholders = placeholders

    def manifest_digest(self, ref: ImageRef) -> str | None:
        """A placeholder is present (the pipeline confirms the real digest itself after the push)."""
        return str(ref.digest) if ref.digest in self.placeholders else self.real.manifest_digest(ref)

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """Labels come from the registry."""
        return self.real.image_labels(ref)


def _source_commits(inputs: ReleaseInputs, images: Mapping[str, str]) -> dict[str, str] | None:
    """Each image's source commit: this release's (the promotion's monotonic guard compares them)."""
    commit = inputs.source_commit
    return {name: commit for name in images} if commit else None


def _plan(
    inputs: ReleaseInputs, images: Mapping[str, str], factory: Callable[[str], _PreviewRegistry] | None = None
) -> PromotionPlan:
    """The promotion of `images` as planned now (nothing written): the diff, the guards' decisions."""
    from release.gitops.promote import plan_promotion

    return plan_promotion(
        images,
        repo_root=inputs.root,
        topology=inputs.topology,
        targets=inputs.configured,
        source_commits=_source_commits(inputs, images),
        policy="monotonic",  # newest wins: a concurrent release of a newer commit is never overwritten
        registry_client_factory=factory,
        docker_config=inputs.loaded.context.docker_config_dir,
    )


def start_preview(plan: ReleasePlan, inputs: ReleaseInputs) -> Future[PromotionPlan]:
    """Plan the promotion of placeholder digests on a side thread while the builds run (a smoke build's preview).

    The real digests replace the placeholders in its diff afterwards (`show_preview`), so the preview costs the
    release no time of its own: its git and registry questions are answered while BuildKit works.
    """
    images = {t.name: f"{t.repository}@{_placeholder(t.name)}" for t in plan.targets}
    placeholders = {_placeholder(t.name) for t in plan.targets}

    def preview() -> PromotionPlan:
        return _plan(inputs, images, lambda registry: _PreviewRegistry(registry, placeholders, inputs))

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview")
    future = pool.submit(preview)
    pool.shutdown(wait=False)
    return future


def show_preview(
    preview: Future[PromotionPlan], results: Sequence[TargetResult], inputs: ReleaseInputs, say: Say
) -> None:
    """Print the diff a promotion of the built images would commit (a smoke build leaves GitOps untouched)."""
    images = {r.target: r.image_ref for r in results if r.image_ref}
    texts = {t.name: inputs.root / t.values.file for t in inputs.targets}
    already = any(
        ref.rsplit("@", 1)[1] in (texts[name].read_text(encoding="utf-8") if texts[name].exists() else "")
        for name, ref in images.items()
    )
    try:
        # A pinned digest came back (a fully cached rebuild): plan with the real refs, for a no-op diff.
        planned = _plan(inputs, images) if already else preview.result()
    except ReleaseError as err:
        say(f"note: no promotion preview: {err}")
        return
    diff = planned.diff
    for target, image_ref in images.items():
        diff = diff.replace(_placeholder(target), image_ref.rsplit("@", 1)[1])
    say("promotion preview (smoke build: GitOps untouched; this is the diff a promotion would commit):")
    say(diff.rstrip("\n") or "(no change: the values files already pin these images)")


def promote_built(results: Sequence[TargetResult], inputs: ReleaseInputs, say: Say) -> Promotion:
    """Pin the built images in the values files (one commit, pushed) and append the release record."""
    from release.gitops.promote import promote
    from release.gitops.record import append_record, build_record

    images = {r.target: r.image_ref for r in results if r.image_ref}
    settings = inputs.loaded.settings
    try:
        result = promote(
            images,
            repo_root=inputs.root,
            topology=inputs.topology,
            targets=inputs.configured,
            source_commits=_source_commits(inputs, images),
            policy="monotonic",
            force=inputs.request.force,
            remote=settings.gitops_remote,
            branch=settings.gitops_branch,
            author=settings.gitops_author,
            push_attempts=settings.gitops_push_attempts,
            push_backoff=settings.gitops_push_backoff,
            docker_config=inputs.loaded.context.docker_config_dir,
        )
    except ReleaseError as err:
        say(f"error: GitOps update failed: {err}")
        return Promotion(error=err)
    # Which images were taken instead of built (their inputs equal those of the image at the tag: FRACTALOPS_REUSE).
    record = {**build_record(result), "reused": sorted(r.target for r in results if r.reused)}
    where = append_record(record, inputs.loaded.record_file)  # beside this run's build events
    if result.noop:
        say("gitops: the values files already pin these images; nothing committed")
    else:
        say(f"gitops: {result.commit} pushed after {result.retries} retries; record in {where}")
    return Promotion(record=record)
