"""Every environment variable the toolkit reads: the one list the workflow and release.sh must agree with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    """A variable, what it does, and whether it holds a secret."""

    name: str
    help: str
    secret: bool = False


DRIVER_VARS: tuple[EnvVar, ...] = (
    EnvVar("FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE", "1 allows a release outside CI (a person at a terminal)."),
    EnvVar(
        "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS",
        "0 = smoke build (GitOps untouched), 1 = promote into the values files.",
    ),
    EnvVar(
        "FRACTALOPS_REPO_ROOT",
        "Repository root (release.sh sets it to its own checkout; default: found from the working directory).",
    ),
    EnvVar("FRACTALOPS_TOPOLOGY", "Path of the topology file (default: ops/topology/fractalops.yaml)."),
    EnvVar("FRACTALOPS_TARGETS", "Path of the release targets file (default: ops/containers/fractalops/targets.yaml)."),
    EnvVar("FRACTALOPS_BUILDER", "buildx builder to use (default: the current one)."),
    EnvVar("FRACTALOPS_PLATFORM", "Target platform(s), passed to buildx as --platform."),
    EnvVar("FRACTALOPS_SOURCE_COMMIT", "Source commit of the build (default: HEAD of the source repository)."),
    EnvVar("FRACTALOPS_CACHE_BRANCH", "Branch whose cache is written (the main branch's cache is also read)."),
    EnvVar(
        "FRACTALOPS_CACHE_DEADLINE",
        "Seconds a registry cache import/export step may run before the build is stopped with a clear error (120).",
    ),
    EnvVar("FRACTALOPS_PROGRESS", "Progress display: auto (tty at a terminal outside CI), plain or tty."),
    EnvVar("FRACTALOPS_BUILD_EVENTS_FILE", "JSONL file the Build Plane Events are appended to."),
    EnvVar("FRACTALOPS_BUILD_EVENTS_URL", "Optional HTTP sink the Build Plane Events are POSTed to."),
    EnvVar("FRACTALOPS_GITOPS_AUTHOR", "Author of GitOps commits, 'Name <email>'."),
    EnvVar("FRACTALOPS_GITOPS_REMOTE", "Remote the GitOps commit is pushed to (default: origin)."),
    EnvVar("FRACTALOPS_GITOPS_BRANCH", "Branch the GitOps commit is pushed to (default: main)."),
    EnvVar("FRACTALOPS_GITOPS_PUSH_ATTEMPTS", "Push attempts when the remote moved (default 8)."),
    EnvVar("FRACTALOPS_GITOPS_PUSH_BACKOFF", "First backoff between push attempts in seconds (default 0.2)."),
    EnvVar("FRACTALOPS_EVENTS_DIR", "Folder of the release records (releases.jsonl)."),
    EnvVar("FRACTALOPS_NEXUS_VIA", "How the builder reaches Nexus: service (DNS name, default) or clusterip."),
)

DEVSTACK_VARS: tuple[EnvVar, ...] = (
    EnvVar("FRACTALOPS_DEVSTACK_DIR", "State folder of the local build stack."),
    EnvVar("FRACTALOPS_DEVSTACK_PORT_BASE", "First of the local build stack's loopback ports."),
)

TEST_HOOKS: tuple[EnvVar, ...] = (
    EnvVar("FRACTALOPS_TEST_CRASH_AT", "Test hook: kill the GitOps writer at a named point (crash tests only)."),
)

RENDER_VARS: tuple[EnvVar, ...] = (
    EnvVar("FRACTALOPS_NEXUS_PULL_PASSWORD", "Node pull password, from OpenBao's runtime scope.", secret=True),
)

CI_VARS: tuple[str, ...] = (
    "CI",
    "GITHUB_ACTIONS",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_RUN_ID",
    "GITHUB_SHA",
    "GITHUB_REF_NAME",
)


def names() -> set[str]:
    """The names of every FRACTALOPS_* variable the toolkit reads."""
    return {v.name for v in (*DRIVER_VARS, *RENDER_VARS, *DEVSTACK_VARS, *TEST_HOOKS)}
