"""The builder host: one shared standalone buildkitd (mutual TLS) in its namespace, and a remote builder on each runner."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from release.adapters import process
from release.devstack.buildkit import ensure_buildkit
from release.devstack.buildkit_certs import cert_paths
from release.devstack.buildkit_daemon import BuildkitdLayout, running_pid, start_buildkitd, stop_buildkitd
from release.devstack.cluster.hosts import Host, daemon_in_netns, in_netns
from release.devstack.cluster.topology import shared_builder
from release.devstack.paths import StackPaths
from release.errors import EngineError
from release.topology.model import Topology

Log = Callable[[str], None]
# The buildx builder each runner gets for the shared BuildKit (not made current: a runner's own engine stays default).
SHARED_BUILDER = "shared"


def layout(folder: StackPaths) -> BuildkitdLayout:
    """Return where the builder host's buildkitd keeps its TLS files, config, root, log and pidfile."""
    return BuildkitdLayout(folder.root / "buildkitd")


def endpoint(topology: Topology) -> str:
    """Return the address runners give buildx: the topology's shared BuildKit (its name resolves to the builder host)."""
    return shared_builder(topology).endpoint


def server_names(topology: Topology, address: str) -> list[str]:
    """Return the names buildkitd's certificate carries: the topology's server name and endpoint host, the address."""
    builder = shared_builder(topology)
    return list(dict.fromkeys([builder.server_name, builder.host, address]))


def start(folder: StackPaths, state: Path, host: Host, topology: Topology, log: Log) -> bool:
    """Start buildkitd inside the builder host (built once per machine) unless it runs; return whether it started."""
    if running_pid(layout(folder)) is not None:
        return False
    builder = shared_builder(topology)
    binaries = ensure_buildkit(state / "buildkit", log)
    start_buildkitd(
        layout(folder).folder,
        binaries,
        topology,
        host=host.address,
        port=builder.port,
        server_names=server_names(topology, host.address),
        log=log,
        prefix=daemon_in_netns(host.namespace, []),
    )
    return True


def stop(folder: StackPaths, log: Log) -> int | None:
    """Stop the builder host's buildkitd (its process group) and unmount what it left; return its pid if it ran."""
    pid = stop_buildkitd(layout(folder).folder)
    if pid is not None:
        log(f"devstack: stopped builder buildkitd (pid {pid})")
    return pid


def wipe(folder: StackPaths) -> bool:
    """Delete the stopped buildkitd's cache (its --root); the TLS files stay (they are renewed when near their end)."""
    root = layout(folder).root
    if running_pid(layout(folder)) is not None or not root.exists():
        return False
    shutil.rmtree(root)
    return True


def create_command(folder: StackPaths) -> list[str]:
    """Return `fractalops-release builder create` for the shared BuildKit with the client's TLS files (no endpoint)."""
    client = cert_paths(layout(folder).certs).client
    return [
        sys.executable, "-m", "release", "builder", "create",
        "--name", SHARED_BUILDER, "--driver", "remote",
        "--tls-cacert", str(client.ca_cert), "--tls-cert", str(client.cert), "--tls-key", str(client.key),
    ]  # fmt: skip


def add_to_runner(
    builder: StackPaths, runner: StackPaths, host: Host, topology: Topology, env: dict[str, str], log: Log
) -> bool:
    """Create the runner's remote builder for the shared BuildKit (endpoint: env's FRACTALOPS_TOPOLOGY, the shape's)."""
    if (runner.docker_config / "buildx" / "instances" / SHARED_BUILDER).exists():
        return False
    try:
        process.run(
            in_netns(host.namespace, create_command(builder)),
            env=env,
            timeout=120.0,
            what=f"creating builder {SHARED_BUILDER} on {host.name}",
            hint=f"read {layout(builder).log}",
        )
    except process.ProcessError as err:
        raise EngineError(str(err)) from None
    log(f"devstack: {host.name} has builder {SHARED_BUILDER} ({endpoint(topology)}, mutual TLS)")
    return True
