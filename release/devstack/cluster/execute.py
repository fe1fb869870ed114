"""`devstack exec --host H -- CMD…`: a command inside a host's namespace with that host's environment."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from release.devstack.cluster.credentials import read_credentials
from release.devstack.cluster.hosts import RUNNERS, ClusterNet, in_netns, netns_exists
from release.devstack.cluster.paths import ClusterPaths
from release.devstack.cluster.runners import state_home
from release.devstack.install import Binaries
from release.errors import OperationError, UsageError

USERNAME_VAR = "FRACTALOPS_NEXUS_USERNAME"
PASSWORD_VAR = "FRACTALOPS_NEXUS_PASSWORD"
# Set when the caller has not: each runner keeps its own Build Plane Events (and release records beside them), and
# reaches Nexus by its service name (a runner's resolver is the cluster DNS; its credentials name the connectors so).
DEFAULTED = ("FRACTALOPS_BUILD_EVENTS_FILE", "FRACTALOPS_NEXUS_VIA")


def host_env(paths: ClusterPaths, name: str, binaries: Binaries) -> dict[str, str]:
    """Return what a host's commands see: the shape's topology and credentials; on a runner, its docker client."""
    # PATH: the engine's docker client, the toolkit's own interpreter folder (`python -m release …`), the system's.
    env = {
        "PATH": f"{paths.bin_dir}:{Path(sys.executable).parent}:{binaries.engine_path}",
        "FRACTALOPS_TOPOLOGY": str(paths.topology),
        "FRACTALOPS_DEVSTACK_DIR": str(paths.stack.root),
    }
    credentials = read_credentials(paths.secrets)
    if credentials is not None:
        env[USERNAME_VAR] = credentials.username
        env[PASSWORD_VAR] = credentials.password
    if name in RUNNERS:
        folder = paths.host(name)
        env["DOCKER_HOST"] = f"unix://{folder.docker_socket}"
        env["DOCKER_CONFIG"] = str(folder.docker_config)
        env["FRACTALOPS_BUILD_EVENTS_FILE"] = str(paths.events_file(name))
        env["FRACTALOPS_NEXUS_VIA"] = "service"
        # The runner's own user state (`builder create`'s buildkitd.toml files), gone with its engine at `down`.
        env["XDG_STATE_HOME"] = str(state_home(folder))
    return env


def command_env(host: Mapping[str, str], caller: Mapping[str, str]) -> dict[str, str]:
    """Return the command's environment: the caller's, with the host's values winning (but not over `DEFAULTED` ones)."""
    env = dict(caller)
    for key, value in host.items():
        if key in DEFAULTED and caller.get(key):
            continue
        env[key] = value
    if "DOCKER_HOST" not in host:  # the nexus and builder hosts run no engine: a caller's must not leak in
        env.pop("DOCKER_HOST", None)
    return env


def exec_plan(
    paths: ClusterPaths,
    net: ClusterNet,
    name: str,
    command: Sequence[str],
    binaries: Binaries,
    caller: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """Return the argv and environment (`caller`'s, the host's over it) that run `command` on host `name`."""
    if not command:
        raise UsageError("devstack exec: no command; give one after `--`, e.g. `devstack exec -- docker info`")
    host = net.host(name)
    if not netns_exists(host.namespace):
        raise OperationError(
            f"devstack exec: host {name} is not up (no namespace {host.namespace}). "
            "What to do: `fractalops-release devstack up --shape cluster`."
        )
    env = command_env(host_env(paths, name, binaries), caller)
    if name in RUNNERS:
        paths.events_file(name).parent.mkdir(parents=True, exist_ok=True)
    return in_netns(host.namespace, command), env
