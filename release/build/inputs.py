"""A release's inputs: the request and the settings checked, then resolved into one `ReleaseInputs`.

Two steps, so the engine can be asked its questions between them: `check` reads no file and starts no process
(the switches and the values that would fail only after a push); `resolve` reads the topology and the targets
and asks git for the source commit and whether the build input is that commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from release import github
from release.build import checks
from release.build.optin import Switches, check_switches
from release.errors import ConfigError, GuardRefusal, ReleaseError, UsageError
from release.labels import DIRTY_LABEL, github_url, web_url
from release.urls import SinkURL, events_url

if TYPE_CHECKING:  # the models are imported when `resolve` reads the files, after the engine's questions are asked
    from release.settings import Loaded
    from release.targets import Target
    from release.topology.model import Topology

PORTAL_MESSAGE = (
    "the portal image is released from yamonco/fractalops-frontend, not from this repository; run: "
    'gh workflow run "Portal GitOps Release" --repo yamonco/fractalops-frontend'
)
EVENTS_URL = "FRACTALOPS_BUILD_EVENTS_URL"


@dataclass(frozen=True)
class ReleaseRequest:
    """What only the command line says about a release (everything else comes from the settings)."""

    targets: tuple[str, ...] = ()
    json_output: bool = False
    dry_run: bool = False
    use_cache: bool = True
    force: bool = False


@dataclass(frozen=True)
class Checked:
    """The request and the settings once checked: nothing read from disk yet, no process started."""

    request: ReleaseRequest
    loaded: Loaded
    switches: Switches
    given_commit: tuple[str, str] | None  # (variable, sha) of FRACTALOPS_SOURCE_COMMIT or GITHUB_SHA
    platforms: tuple[str, ...]
    sink: SinkURL | None
    branch: str


@dataclass(frozen=True)
class ReleaseInputs:
    """Everything a release is made of, resolved: what the plan, the builds, the report and the promotion read."""

    request: ReleaseRequest
    loaded: Loaded
    update_gitops: bool
    root: Path
    topology: Topology
    configured: Mapping[str, Target]  # every target of the targets file (a promotion reads them all)
    targets: tuple[Target, ...]  # the targets this run builds
    source_commit: str | None
    source_url: str | None
    dirty: tuple[str, ...]  # why the build input is not the source commit; empty when it is
    branch: str
    platforms: tuple[str, ...]
    sink: SinkURL | None
    run_stamp: str

    @property
    def builder(self) -> str | None:
        """The buildx builder asked for (None: the current one)."""
        return self.loaded.settings.builder

    @property
    def via(self) -> str:
        """How builders reach Nexus: service or clusterip."""
        return self.loaded.settings.nexus_via


def check(request: ReleaseRequest, loaded: Loaded) -> Checked:
    """The switches and every value that would show its mistake only after a push; a dry run asks the same."""
    settings, context = loaded.settings, loaded.context
    switches = check_switches(settings, context, building=not request.dry_run)
    given = checks.source_commit(settings.source_commit, context.github_sha)
    platform_source = "--platform" if loaded.sources["platform"] == "flag" else "FRACTALOPS_PLATFORM"
    platforms = checks.platforms(settings.platform, platform_source)
    url = settings.build_events_url
    sink = events_url(EVENTS_URL, url.get_secret_value()) if url is not None else None
    github.check_appendable("GITHUB_OUTPUT", context.github_output)
    github.check_appendable("GITHUB_STEP_SUMMARY", context.github_step_summary)
    branch = settings.cache_branch or context.github_head_ref or context.github_ref_name or "main"
    return Checked(request, loaded, switches, given, platforms, sink, branch)


def resolve(checked: Checked, say: Callable[[str], None]) -> ReleaseInputs:
    """Read the topology and targets, find the source commit, refuse what a promotion could not pin."""
    from release.targets import default_targets_path, load_targets

    settings = checked.loaded.settings
    root = _repo_root(settings.repo_root)
    topology = _load_topology(settings.topology, root)
    targets_file = settings.targets or default_targets_path(root)
    configured = load_targets(targets_file)
    targets = select_targets(configured, checked.request.targets)
    checks.build_files(targets, root, str(targets_file))
    given = checked.given_commit[1] if checked.given_commit else None
    inputs = ReleaseInputs(
        request=checked.request,
        loaded=checked.loaded,
        update_gitops=checked.switches.update_gitops,
        root=root,
        topology=topology,
        configured=configured,
        targets=tuple(targets),
        source_commit=given or _head(root),
        source_url=github_url(checked.loaded.context.github_server_url, checked.loaded.context.github_repository)
        or _origin_url(root),
        dirty=tuple(_dirty(root, targets, given)),
        branch=checked.branch,
        platforms=checked.platforms,
        sink=checked.sink,
        run_stamp=datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
    )
    if inputs.update_gitops and len(targets) != len(configured):
        say("note: promoting a subset of targets; the others stay pinned as they are")
    _refuse_or_warn_dirty(inputs, say)
    if inputs.update_gitops:  # a dry run predicts the real run's refusals, so it asks the same questions
        _check_promotion(inputs)
    return inputs


def select_targets(available: Mapping[str, Target], wanted: tuple[str, ...]) -> list[Target]:
    """The targets asked for (all when none named); portal and unknown names are usage errors."""
    if "portal" in wanted:
        raise UsageError(PORTAL_MESSAGE)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise UsageError(f"--target: unknown target(s) {', '.join(map(repr, unknown))}; known: {', '.join(available)}")
    names = list(dict.fromkeys(wanted)) or list(available)
    return [available[name] for name in names]


def _repo_root(explicit: Path | None) -> Path:
    """FRACTALOPS_REPO_ROOT (it must hold the topology file), else the repository around the working folder."""
    from release.topology.load import RELATIVE_PATH, repo_root

    if explicit is not None:
        if not (explicit / RELATIVE_PATH).is_file():
            raise ConfigError(
                f"FRACTALOPS_REPO_ROOT={str(explicit)!r}: not a repository root (no {RELATIVE_PATH} there)"
            )
        return explicit.resolve()
    return repo_root(Path.cwd()) or Path.cwd()


def _load_topology(path: Path | None, root: Path) -> Topology:
    """The topology file given, else the repository's own."""
    from release.topology import load_topology
    from release.topology.load import RELATIVE_PATH

    return load_topology(path or root / RELATIVE_PATH)


def _head(root: Path) -> str | None:
    """HEAD of the repository (the source commit when none is given), None when git cannot tell."""
    from release.adapters.git import head_commit

    try:
        return head_commit(root)
    except ReleaseError:
        return None


def _origin_url(root: Path) -> str | None:
    """The web address of the `origin` remote, None without one (or a local one)."""
    from release.adapters.git import remote_url

    remote = remote_url(root)
    return web_url(remote) if remote else None


def _dirty(root: Path, targets: list[Target], given: str | None) -> list[str]:
    """Why the build input is not the source commit (empty when it is): changed files, another checkout, no answer."""
    from release.adapters.git import dirty_paths, head_commit
    from release.build.context import differences

    try:
        changed = dirty_paths(root, sorted({t.context for t in targets}))
        head = head_commit(root) if given else None
    except ReleaseError as err:
        return [f"git cannot tell: {err}"]
    return differences(root, targets, changed, given, head)


def _refuse_or_warn_dirty(inputs: ReleaseInputs, say: Callable[[str], None]) -> None:
    """A promotion pins what a commit describes: refuse a build input that is not it; a smoke build warns."""
    if not inputs.dirty:
        return
    shown = "; ".join(inputs.dirty)
    if inputs.update_gitops and not inputs.request.force:
        raise GuardRefusal(
            f"the build input is not the source commit ({shown}): a promotion pins what a commit describes; "
            "commit them, or run a smoke build (FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS=0)"
        )
    say(
        f"warning: the build input is not the source commit ({shown}); the images are labelled {DIRTY_LABEL}=true "
        "and promote refuses them without --force"
    )


def _check_promotion(inputs: ReleaseInputs) -> None:
    """What the promotion after the builds needs, checked before them (author, push budget, clean files, remote)."""
    from release.gitops.promote import check_promotion_settings

    settings = inputs.loaded.settings
    check_promotion_settings(
        inputs.root,
        sorted({t.values.file for t in inputs.targets}),
        remote=settings.gitops_remote,
        branch=settings.gitops_branch,
        author=settings.gitops_author,
        push_attempts=settings.gitops_push_attempts,
        push_backoff=settings.gitops_push_backoff,
    )
