"""The cluster shape's topology: the production file's names and ports, with the nexus host's address behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from release.devstack.configs import dump_yaml
from release.errors import ConfigError
from release.topology.load import RELATIVE_PATH, load_topology, parse_topology, repo_root
from release.topology.model import Builder, Topology

# docker.io stand-in inside the nexus host: the group connector's upstream, seeded offline, no credentials.
UPSTREAM_PORT = 5000


def production_topology(root: Path | None = None) -> Topology:
    """Return the repository's committed topology (the production names and ports)."""
    found = root or repo_root()
    if found is None:
        raise ConfigError(f"the cluster shape copies {RELATIVE_PATH}: no repository found; set FRACTALOPS_REPO_ROOT")
    return load_topology(found / RELATIVE_PATH)


def cluster_topology_data(production: Topology, nexus_address: str) -> dict[str, Any]:
    """Return the production topology with only addresses changed: the nexus host stands in for the ClusterIP.

    Names and ports stay: the service name, the connectors' ports, the build cache repository, the shared BuildKit's
    endpoint (its name resolves to the builder host). Release images go to the hosted connector (plain HTTP, as a
    release registry on a Nexus connector must say).
    """
    shared_builder(production, str(RELATIVE_PATH))
    data = production.model_dump(mode="python")
    nexus = production.nexus
    data["nexus"]["public_url"] = f"http://{nexus.cluster_host}:{nexus.web_port}"
    data["registry_cache"]["host_ip"] = nexus_address
    data["release"] = {
        "image_registry": nexus.docker_internal_endpoint,
        "image_namespace": production.release.image_namespace,
        "scheme": "http",
    }
    return data


def cluster_topology(production: Topology, nexus_address: str) -> Topology:
    """Return the cluster topology as the validated model."""
    return parse_topology(cluster_topology_data(production, nexus_address), "cluster topology")


def render_cluster_topology(production: Topology, nexus_address: str) -> str:
    """Return the topology file text of the cluster shape."""
    header = (
        "# Topology of the devstack's cluster shape (written by `devstack up --shape cluster`; do not edit).\n"
        "# Production names and ports; registry_cache.host_ip is the nexus host's address (the ClusterIP stand-in).\n"
    )
    data = cluster_topology_data(production, nexus_address)
    data["nexus"]["repositories"] = {k: v for k, v in data["nexus"]["repositories"].items() if v is not None}
    data["nexus"] = {k: v for k, v in data["nexus"].items() if v is not None}
    data["node_mirror"] = {k: v for k, v in data["node_mirror"].items() if v is not None}
    data["builder"] = {k: v for k, v in data["builder"].items() if v is not None}
    return header + dump_yaml(data)


def shared_builder(topology: Topology, source: str = "the cluster topology") -> Builder:
    """Return the topology's shared BuildKit, which the shape runs on its builder host under the endpoint's name."""
    builder = topology.builder
    if builder is None:
        raise ConfigError(
            f"{source}: builder: the cluster shape runs the shared BuildKit under the topology's "
            "builder.endpoint; add a builder section (e.g. endpoint: tcp://HOST:PORT)"
        )
    if not builder.host_is_name:
        raise ConfigError(
            f"{source}: builder.endpoint: {builder.endpoint!r}: the cluster shape keeps production names and "
            "changes only the addresses behind them; name the builder by a host name, not an address"
        )
    return builder


def host_names(topology: Topology, nexus_address: str, builder_address: str) -> dict[str, str]:
    """Return the names every host resolves: the Nexus service and the shared builder (its endpoint's host)."""
    return {topology.nexus.cluster_host: nexus_address, shared_builder(topology).host: builder_address}
