"""Release guards read from the environment: CI detection, the local opt-in, the GitOps switch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from release.errors import GuardRefusal, UsageError

ALLOW_LOCAL = "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE"
UPDATE_GITOPS = "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS"
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def parse_bool(name: str, value: str | None, default: bool) -> bool:
    """A 0/1/true/false/yes/no switch; anything else is a usage error, never a silent default."""
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise UsageError(f"{name}={value!r}: want one of 0, 1, true, false, yes, no")


def in_ci(env: Mapping[str, str]) -> bool:
    """True under a CI system (CI or GITHUB_ACTIONS set to a true value)."""
    return any(env.get(name, "").strip().lower() in _TRUE for name in ("CI", "GITHUB_ACTIONS"))


@dataclass(frozen=True)
class Guards:
    """The decisions the guards made for this run."""

    in_ci: bool
    allow_local: bool
    update_gitops: bool


def check_guards(
    env: Mapping[str, str],
    *,
    allow_local: bool | None = None,
    update_gitops: bool | None = None,
    building: bool = True,
) -> Guards:
    """Apply the guards: refuse a local release without the opt-in; parse the GitOps switch."""
    gitops = update_gitops if update_gitops is not None else parse_bool(UPDATE_GITOPS, env.get(UPDATE_GITOPS), False)
    local = allow_local if allow_local is not None else parse_bool(ALLOW_LOCAL, env.get(ALLOW_LOCAL), False)
    ci = in_ci(env)
    if building and not ci and not local:
        raise GuardRefusal(
            "releases run in CI; outside CI set "
            f"{ALLOW_LOCAL}=1 (and {UPDATE_GITOPS}=0 for a smoke build) to build from this machine"
        )
    return Guards(in_ci=ci, allow_local=local, update_gitops=gitops)
