"""The release's opt-in switches: a release runs in CI or with the local opt-in; the GitOps switch says promote."""

from __future__ import annotations

from dataclasses import dataclass

from release.errors import GuardRefusal
from release.settings import Context, Settings

ALLOW_LOCAL = "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE"
UPDATE_GITOPS = "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS"


@dataclass(frozen=True)
class Switches:
    """The decisions the switches made for this run."""

    in_ci: bool
    allow_local: bool
    update_gitops: bool


def check_switches(settings: Settings, context: Context, *, building: bool) -> Switches:
    """Refuse a local release without the opt-in (a dry run builds nothing, so it needs none); the switches."""
    switches = Switches(context.in_ci, settings.allow_local_runtime_release, settings.runtime_release_update_gitops)
    if building and not switches.in_ci and not switches.allow_local:
        raise GuardRefusal(
            "releases run in CI; outside CI set "
            f"{ALLOW_LOCAL}=1 (and {UPDATE_GITOPS}=0 for a smoke build) to build from this machine"
        )
    return switches
