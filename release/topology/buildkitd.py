"""Render a `buildkitd.toml` for BuildKit builders: Nexus mirrors and plain-HTTP connectors."""

from __future__ import annotations

import json

from release.imageref import parse_image_ref
from release.topology.model import Topology


def render_buildkitd(topology: Topology, via: str = "service") -> str:
    """The TOML text; `via` picks the service DNS name or the ClusterIP for the Nexus host."""
    group = f"{topology.nexus_host(via)}:{topology.nexus.docker_group_port}"
    internal = parse_image_ref(topology.buildcache_ref_via(via)).registry
    q = json.dumps
    out = ["# Rendered by fractalops-release from the topology; do not edit by hand.", ""]
    for upstream in ("docker.io", "ghcr.io"):
        out += [f"[registry.{q(upstream)}]", f"  mirrors = [{q(group)}]", ""]
    for connector in dict.fromkeys((group, internal)):
        out += [f"[registry.{q(connector)}]", "  http = true", ""]
    return "\n".join(out).rstrip("\n") + "\n"
