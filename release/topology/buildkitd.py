"""Render the builders' registry settings: `buildkitd.toml` and the engine's daemon.json registry keys."""

from __future__ import annotations

import json
from typing import Any

from release.topology.model import Topology


def render_buildkitd(topology: Topology, via: str = "service") -> str:
    """The TOML text; `via` picks the service DNS name or the ClusterIP for the Nexus host."""
    group = f"{topology.nexus_host(via)}:{topology.nexus.docker_group_port}"
    q = json.dumps
    out = ["# Rendered by fractalops-release from the topology; do not edit by hand.", ""]
    for upstream in ("docker.io", "ghcr.io"):
        out += [f"[registry.{q(upstream)}]", f"  mirrors = [{q(group)}]", ""]
    for registry in topology.plain_http_registries(via):
        out += [f"[registry.{q(registry)}]", "  http = true", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def daemon_registries(topology: Topology, via: str | None = None) -> dict[str, Any]:
    """daemon.json's `registry-mirrors` (the docker-group) and `insecure-registries` (the plain-HTTP ones)."""
    host = topology.nexus_host(via or "service")
    group = f"{host}:{topology.nexus.docker_group_port}"
    return {
        "registry-mirrors": [f"{topology.registry_scheme(group)}://{group}"],
        "insecure-registries": list(topology.plain_http_registries(via)),
    }
