"""Promote images: plan (registry checks, guards, diff), then apply (one commit, push with rebase and retry)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from release.adapters.git import Author, GitRepo, parse_author
from release.errors import ConfigError, GitError, GuardRefusal, RegistryError, ReleaseError
from release.gitops.changes import Candidate, PinnedLookup, PromotionPlan, TargetChange, evaluate
from release.gitops.guards import Decision
from release.gitops.writer import ensure_clean, finish, recover, write_and_commit
from release.imageref import ImageRef, parse_pinned_ref
from release.labels import DIRTY_LABEL, REVISION_LABEL
from release.targets import RELATIVE_PATH as TARGETS_PATH
from release.targets import Target, load_targets, read_values_file

if TYPE_CHECKING:
    from release.topology.model import Topology

# Named in messages: the settings a refused push budget comes from.
ATTEMPTS_ENV = "FRACTALOPS_GITOPS_PUSH_ATTEMPTS"
BACKOFF_ENV = "FRACTALOPS_GITOPS_PUSH_BACKOFF"
BACKOFF_CAP = 3.0
Policy = Literal["strict", "monotonic"]


class Registry(Protocol):
    """What a promotion needs from a registry client (see release.adapters.registry.RegistryClient)."""

    def manifest_digest(self, ref: ImageRef) -> str | None:
        """The digest the registry holds for `ref`, None if unknown."""

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """The config labels of the image `ref` names."""


RegistryFactory = Callable[[str], Registry]


def _default_factory(topology: Topology, docker_config: Path | None) -> RegistryFactory:
    """Clients that speak to each registry in the scheme the topology gives it, with docker's credentials."""
    from release.adapters.registry import RegistryClient

    return lambda registry: RegistryClient.for_topology(topology, registry, docker_config=docker_config)


@dataclass(frozen=True)
class _Context:
    """The collaborators an apply needs again on every attempt (not part of the printable plan)."""

    targets: Mapping[str, Target]
    history: GitRepo | None
    pinned_lookup: PinnedLookup
    base: str | None


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion did: the plan, the final changes and decisions, the commit, whether it was pushed."""

    plan: PromotionPlan
    changes: tuple[TargetChange, ...]
    decisions: tuple[Decision, ...]
    commit: str | None
    pushed: bool
    attempts: int
    retries: int
    dry_run: bool = False
    diff: str = ""
    remote: str | None = None
    branch: str | None = None
    pushes: list[str] = field(default_factory=list)

    @property
    def noop(self) -> bool:
        """Whether nothing had to change."""
        return self.commit is None and not self.dry_run


def _labels_lookup(factory: RegistryFactory) -> PinnedLookup:
    """Source commit of a pinned image from its registry labels; None when it cannot be read."""
    cache: dict[tuple[str, str], str | None] = {}

    def lookup(repository: str, digest: str) -> str | None:
        if (repository, digest) not in cache:
            try:
                ref = parse_pinned_ref(f"{repository}@{digest}", what="pinned image")
                cache[(repository, digest)] = factory(ref.registry).image_labels(ref).get(REVISION_LABEL)
            except ReleaseError:
                cache[(repository, digest)] = None
        return cache[(repository, digest)]

    return lookup


def _candidates(
    images: Mapping[str, str],
    targets: Mapping[str, Target],
    topology: Topology,
    factory: RegistryFactory,
    history: GitRepo | None,
    source_commits: Mapping[str, str],
    force: bool = False,
) -> tuple[Candidate, ...]:
    """Parse, match and confirm every image in its registry; read its source commit."""
    from release.yamlfile import shown

    if not images:
        raise ConfigError("nothing to promote: give at least one target=image_ref")
    result: list[Candidate] = []
    for name, text in images.items():
        if name not in targets:
            raise ConfigError(f"unknown target {shown(name)} (known: {', '.join(sorted(targets))})")
        ref = parse_pinned_ref(text, what=f"{name} image_ref")
        wanted = targets[name].repository(topology)
        if ref.repository != wanted:
            raise ConfigError(
                f"{name} image_ref {shown(text)}: repository {ref.repository} is not the target's {wanted}"
            )
        client = factory(ref.registry)
        found = client.manifest_digest(ref)
        if found is None:
            raise RegistryError(f"{name}: {ref} is not in the registry {ref.registry} (manifest unknown)")
        if found != ref.digest:
            raise RegistryError(f"{name}: {ref}: the registry answered digest {found}")
        revision: str | None
        if name in source_commits:
            revision, source = source_commits[name], "given"
        else:
            labels = client.image_labels(ref)
            if labels.get(DIRTY_LABEL) == "true" and not force:
                raise GuardRefusal(
                    f"{name}: {ref} was built from uncommitted changes (label {DIRTY_LABEL}); its source commit does "
                    "not describe it. Promote a build of a commit, or pass --force"
                )
            revision, source = labels.get(REVISION_LABEL), "label"
        if revision is not None and history is not None:
            revision = history.resolve(revision) or revision
        assert ref.digest is not None
        result.append(
            Candidate(name, str(ref), ref.repository, ref.tag, ref.digest, revision, source if revision else "unknown")
        )
    return tuple(result)


def _read_texts(root: Path, files: set[str]) -> dict[str, str]:
    return {file: read_values_file(root, file) for file in sorted(files)}


def plan_promotion(
    images: Mapping[str, str],
    *,
    repo_root: Path | str,
    topology: Topology,
    targets: Mapping[str, Target] | None = None,
    source_commits: Mapping[str, str] | None = None,
    policy: Policy = "strict",
    force: bool = False,
    source_repo: Path | str | None = None,
    registry_client_factory: RegistryFactory | None = None,
    docker_config: Path | None = None,
) -> PromotionPlan:
    """Check every image and guard against the files on disk and compute the diff.

    Writes nothing, except that an interrupted earlier write (a journal left by a crash) is rolled back first.
    `policy` says what happens when the remote moved since this plan: `strict` keeps compare-and-swap against
    the plan's values (or already ours); `monotonic` re-checks only the monotonic guard on the new tip.
    Registries are asked with the credentials of the docker config folder `docker_config` (None: anonymously).
    """
    repo = GitRepo(repo_root)
    recover(repo)
    root = repo.root
    targets = targets if targets is not None else load_targets(root / TARGETS_PATH)
    factory = registry_client_factory or _default_factory(topology, docker_config)
    history = GitRepo(source_repo) if source_repo is not None else GitRepo(root)
    candidates = _candidates(images, targets, topology, factory, history, source_commits or {}, force)
    lookup = _labels_lookup(factory)
    texts = _read_texts(root, {targets[c.target].values.file for c in candidates})
    result = evaluate(candidates, targets, texts, expected=None, history=history, pinned_lookup=lookup, force=force)
    decisions = tuple(d for d in result.decisions if d.guard != "cas")
    return PromotionPlan(
        root,
        candidates,
        result.changes,
        decisions,
        result.diff(),
        force,
        policy,
        _Context(targets, history, lookup, repo.head()),
    )


def _check_budget(attempts: int, backoff: float) -> None:
    """Refuse a push budget no promotion can run with (no attempt, a negative or endless backoff)."""
    if attempts < 1 or not 0 <= backoff < float("inf"):
        raise ConfigError(f"{ATTEMPTS_ENV} must be at least 1 and {BACKOFF_ENV} not negative")


def backoff_delay(retry: int, base: float) -> float:
    """Seconds to wait before retry `retry` (1-based): base×1.5^(retry-1), jittered ±50 %, capped."""
    return min(BACKOFF_CAP, base * 1.5 ** (retry - 1)) * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto


def _commit_message(changes: tuple[TargetChange, ...], candidates: Mapping[str, Candidate]) -> str:
    landing = [c for c in changes if not c.noop]
    title = "promote: " + ", ".join(f"{c.target} {c.new.get('tag') or c.new['digest'][7:19]}" for c in landing)
    body = [
        f"{c.target}: {candidates[c.target].image_ref} (source commit {candidates[c.target].revision or 'unknown'})"
        for c in landing
    ]
    return title + "\n\n" + "\n".join(body) + "\n"


def _sync(repo: GitRepo, tip: str | None, remote: str, branch: str) -> None:
    """Fast-forward HEAD to the remote tip; refuse if HEAD holds commits the remote lacks."""
    head = repo.head()
    if tip is None or head == tip:
        return
    if head is not None and repo.is_ancestor(head, tip):
        repo.reset_keep(tip)
        return
    raise GuardRefusal(f"{repo.root}: HEAD has commits that are not on {remote}/{branch}; push or drop them first")


def check_promotion_settings(
    repo_root: Path | str,
    files: list[str],
    *,
    remote: str,
    branch: str,
    author: Author | str | None,
    push_attempts: int,
    push_backoff: float,
    push: bool = True,
) -> None:
    """Everything a promotion needs that a build cannot fix: asked before a release builds, and by dry runs.

    The author parses (None: the default author), the push budget is usable, the values files have no uncommitted
    changes, the remote and branch exist. Like the promotion itself, it first recovers a promotion killed earlier.
    """
    _check_budget(push_attempts, push_backoff)
    if not isinstance(author, Author):
        parse_author(author)
    repo = GitRepo(repo_root)
    recover(repo)  # a promotion killed earlier is undone first, as the promotion itself would
    ensure_clean(repo, files)
    if push:
        tip = repo.check_remote_branch(remote, branch)
        head = repo.head()
        # Unpushed local commits would stop the promotion after the push of the images: refuse them now.
        # (A tip this clone has not fetched yet is newer than HEAD or unrelated; the real run fetches and decides.)
        if head is not None and head != tip and repo.resolve(tip) is not None and not repo.is_ancestor(head, tip):
            raise GuardRefusal(
                f"{repo.root}: HEAD has commits that are not on {remote}/{branch}; push or drop them first"
            )


def apply_promotion(
    plan: PromotionPlan,
    *,
    remote: str,
    branch: str,
    author: Author | str | None,
    push_attempts: int,
    push_backoff: float,
    push: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> PromotionResult:
    """Write the plan's edits in one commit and push it; on a moved remote re-check, rebase and retry."""
    context: _Context = plan.context
    if context is None:
        raise ConfigError("this plan was not made by plan_promotion; it cannot be applied")
    _check_budget(push_attempts, push_backoff)
    count, base = push_attempts, push_backoff
    who = author if isinstance(author, Author) else parse_author(author)
    repo = GitRepo(plan.repo_root)
    recover(repo)
    files = sorted({change.file for change in plan.changes})
    ensure_clean(repo, files)
    candidates = {c.target: c for c in plan.candidates}
    expected = {change.target: change.old for change in plan.changes}
    pushes: list[str] = []
    tip: str | None = None
    for attempt in range(1, count + 1):
        if push:
            tip = repo.fetch(remote, branch)
            _sync(repo, tip, remote, branch)
        texts = _read_texts(repo.root, set(files))
        relaxed = plan.policy == "monotonic" and repo.head() != context.base
        result = evaluate(
            plan.candidates,
            context.targets,
            texts,
            expected=None if relaxed else expected,
            history=context.history,
            pinned_lookup=context.pinned_lookup,
            force=plan.force,
        )
        if not result.texts:
            return PromotionResult(
                plan,
                result.changes,
                result.decisions,
                None,
                False,
                attempt,
                attempt - 1,
                remote=remote,
                branch=branch,
                pushes=pushes,
            )
        base_head = repo.head()
        data = {file: text.encode("utf-8") for file, text in result.texts.items()}
        # Until the push is done or undone the journal stays: a run killed meanwhile is recovered by the next one.
        sha = write_and_commit(repo, data, _commit_message(result.changes, candidates), who, until_pushed=push)
        if not push:
            return PromotionResult(plan, result.changes, result.decisions, sha, False, attempt, 0, diff=result.diff())
        try:
            outcome = repo.push(remote, branch)
        except ReleaseError:
            if base_head is not None:
                repo.reset_keep(base_head)
                finish(repo)
            raise
        pushes.append(f"{outcome.status}: {outcome.detail}")
        if outcome.status == "accepted":
            finish(repo)
            return PromotionResult(
                plan,
                result.changes,
                result.decisions,
                sha,
                True,
                attempt,
                attempt - 1,
                diff=result.diff(),
                remote=remote,
                branch=branch,
                pushes=pushes,
            )
        assert base_head is not None
        repo.reset_keep(base_head)
        finish(repo)
        if outcome.status == "failed":
            raise GitError(f"push to {remote}/{branch} failed: {outcome.detail}")
        if attempt < count:
            sleep(backoff_delay(attempt, base))
    last = pushes[-1].split(": ", 1)[-1] if pushes else "no answer"
    raise GitError(
        f"push to {remote}/{branch} rejected {count} times (last: {last}); nothing was pushed, "
        f"the clone is back at {(tip or '?')[:12]}; if the remote kept moving raise {ATTEMPTS_ENV} or try again"
    )


def promote(
    images: Mapping[str, str],
    *,
    repo_root: Path | str,
    topology: Topology,
    remote: str,
    branch: str,
    author: Author | str | None,
    push_attempts: int,
    push_backoff: float,
    targets: Mapping[str, Target] | None = None,
    source_commits: Mapping[str, str] | None = None,
    policy: Policy = "strict",
    force: bool = False,
    dry_run: bool = False,
    push: bool = True,
    source_repo: Path | str | None = None,
    registry_client_factory: RegistryFactory | None = None,
    docker_config: Path | None = None,
) -> PromotionResult:
    """Plan, then (unless `dry_run`) apply: pin each target's image_ref in its values file and push.

    Remote, branch, author (None: the default) and push budget are the caller's settings; nothing is read here.
    """
    plan = plan_promotion(
        images,
        repo_root=repo_root,
        topology=topology,
        targets=targets,
        source_commits=source_commits,
        policy=policy,
        force=force,
        source_repo=source_repo,
        registry_client_factory=registry_client_factory,
        docker_config=docker_config,
    )
    if dry_run:
        # What the real run would refuse, its preview refuses too.
        check_promotion_settings(
            repo_root,
            sorted({change.file for change in plan.changes}),
            remote=remote,
            branch=branch,
            author=author,
            push_attempts=push_attempts,
            push_backoff=push_backoff,
            push=push,
        )
        return PromotionResult(plan, plan.changes, plan.decisions, None, False, 0, 0, dry_run=True, diff=plan.diff)
    return apply_promotion(
        plan,
        remote=remote,
        branch=branch,
        author=author,
        push_attempts=push_attempts,
        push_backoff=push_backoff,
        push=push,
    )


def as_data(result: PromotionResult) -> dict[str, Any]:
    """Plain data of a result (for records and JSON)."""
    return {
        "targets": [vars(c) for c in result.changes],
        "decisions": [d.as_dict() for d in result.decisions],
        "commit": result.commit,
        "pushed": result.pushed,
        "attempts": result.attempts,
        "retries": result.retries,
        "dry_run": result.dry_run,
    }
