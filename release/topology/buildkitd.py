"""Render a `buildkitd.toml` for BuildKit builders: Nexus mirrors and plain-HTTP connectors."""

from __future__ import annotations

import json

from release.errors import UsageError
from release.imageref import parse_image_ref
from release.topology.model import Topology

VIA = ("service", "clusterip")


def render_buildkitd(topology: Topology, via: str = "service") -> str:
    """The TOML text; `via` picks the service DNS name or the ClusterIP for the Nexus host."""
    if via not in VIA:
        raise UsageError(f"--via: {via!r} is not one of {', '.join(VIA)}")
    nexus = topology.nexus
    host = nexus.cluster_host if via == "service" else topology.registry_cache.host_ip
    group = f"{host}:{nexus.docker_group_port}"
    internal = parse_image_ref(topology.buildcache_ref_via(via)).registry
    q = json.dumps
    out = ["# Rendered by fractalops-release from the topology; do not edit by hand.", ""]
    for upstream in ("docker.io", "ghcr.io"):
        out += [f"[registry.{q(upstream)}]", f"  mirrors = [{q(group)}]", ""]
    for connector in dict.fromkeys((group, internal)):
        out += [f"[registry.{q(connector)}]", "  http = true", ""]
    return "\n".join(out).rstrip("\n") + "\n"
