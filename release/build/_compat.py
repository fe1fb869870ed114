"""TEMPORARY bridge to the CLI half's modules as they are before the two redesign branches merge.

The build pipeline calls these with the fixed interfaces of the redesign (docker_config, push settings as
arguments, no environment reads below the CLI). At the merge, delete this module and import instead:
`RegistryClient` from release.adapters.registry, and `plan_promotion`, `promote`, `check_promotion_settings`
from release.gitops.promote (the calls stay as written).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from release.gitops import promote as _promote
from release.registry import RegistryClient as _RegistryClient

if TYPE_CHECKING:
    from release.gitops.plan import PromotionPlan
    from release.gitops.promote import Policy, PromotionResult, RegistryFactory
    from release.targets import Target
    from release.topology.model import Scheme, Topology


class RegistryClient(_RegistryClient):
    """The registry client with the merged signature (`docker_config`: the folder of config.json; unused here)."""

    def __init__(self, registry: str, *, scheme: Scheme, docker_config: Path | None = None, **options: Any) -> None:
        """Before the merge the client finds config.json itself."""
        super().__init__(registry, scheme=scheme, **options)

    @classmethod
    def for_topology(
        cls, topology: Topology, registry: str, *, docker_config: Path | None = None, **options: Any
    ) -> RegistryClient:
        """A client of `registry` in the scheme the topology gives it."""
        return cls(registry, scheme=topology.registry_scheme(registry), docker_config=docker_config, **options)


def plan_promotion(
    images: Mapping[str, str],
    *,
    repo_root: Path,
    topology: Topology,
    targets: Mapping[str, Target],
    source_commits: Mapping[str, str] | None,
    policy: Policy,
    registry_client_factory: Callable[[str], Any] | None = None,
    docker_config: Path | None = None,
) -> PromotionPlan:
    """release.gitops.promote.plan_promotion with the merged signature."""
    factory: RegistryFactory = registry_client_factory or (
        lambda registry: RegistryClient.for_topology(topology, registry, docker_config=docker_config)
    )
    return _promote.plan_promotion(
        images,
        repo_root=repo_root,
        topology=topology,
        targets=targets,
        source_commits=source_commits,
        policy=policy,
        registry_client_factory=factory,
    )


def promote(
    images: Mapping[str, str],
    *,
    repo_root: Path,
    topology: Topology,
    targets: Mapping[str, Target],
    source_commits: Mapping[str, str] | None,
    policy: Policy,
    force: bool,
    remote: str,
    branch: str,
    author: str | None,
    push_attempts: int,
    push_backoff: float,
    docker_config: Path | None = None,
) -> PromotionResult:
    """release.gitops.promote.promote with the merged signature."""
    return _promote.promote(
        images,
        repo_root=repo_root,
        topology=topology,
        targets=targets,
        source_commits=source_commits,
        policy=policy,
        force=force,
        remote=remote,
        branch=branch,
        author=author,
        attempts=push_attempts,
        backoff=push_backoff,
        registry_client_factory=lambda registry: RegistryClient.for_topology(
            topology, registry, docker_config=docker_config
        ),
    )


def check_promotion_settings(
    root: Path,
    files: list[str],
    *,
    remote: str,
    branch: str,
    author: str | None,
    push_attempts: int,
    push_backoff: float,
) -> None:
    """release.gitops.promote.check_promotion_settings with the merged signature."""
    _promote.check_promotion_settings(
        root, files, remote=remote, branch=branch, author=author, attempts=push_attempts, backoff=push_backoff
    )
