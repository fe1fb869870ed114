"""`render_env`: the FRACTALOPS_* environment derived from the topology, in several formats."""

from __future__ import annotations

import json
import secrets
import shlex
from pathlib import Path

from release.errors import UsageError
from release.topology.model import Topology

FORMATS = ("shell", "dotenv", "github", "json")


def render_env(topology: Topology, via: str = "service") -> dict[str, str]:
    """Every FRACTALOPS_* variable the topology defines, sorted by name; `via` picks how builders reach Nexus."""
    nexus, cache = topology.nexus, topology.registry_cache
    host = topology.nexus_host(via)
    group = f"http://{host}:{nexus.docker_group_port}"
    env = {
        "FRACTALOPS_GHCR_REGISTRY_CACHE": group,
        "FRACTALOPS_DOCKER_IO_MIRROR_ENDPOINT": group,
        "FRACTALOPS_GHCR_IO_MIRROR_ENDPOINT": group,
        "FRACTALOPS_APT_CACHE_URL": nexus.repository_url(nexus.repositories.apt_debian, host),
        "FRACTALOPS_PIP_INDEX_URL": nexus.repository_url(nexus.repositories.pypi, host) + "simple",
        "FRACTALOPS_NPM_REGISTRY_URL": nexus.repository_url(nexus.repositories.npm, host),
        "FRACTALOPS_BUILDCACHE_REF": topology.buildcache_ref_via(via),
        "FRACTALOPS_NEXUS_URL": nexus.public_url,
        "FRACTALOPS_NEXUS_HOST_IP": cache.host_ip,
        "FRACTALOPS_NODE_MIRROR_ENDPOINT": topology.node_mirror_endpoint,
        "FRACTALOPS_NEXUS_PULL_USERNAME": topology.node_mirror.pull_username,
        "FRACTALOPS_IMAGE_REGISTRY": topology.release.image_registry,
    }
    if nexus.repositories.apt_ubuntu:
        env["FRACTALOPS_APT_UBUNTU_CACHE_URL"] = nexus.repository_url(nexus.repositories.apt_ubuntu, host)
    if topology.builder is not None:
        env["FRACTALOPS_BUILDKIT_ENDPOINT"] = topology.builder.endpoint
    return dict(sorted(env.items()))


def _dotenv_quote(value: str) -> str:
    """Double-quote a value the way dotenv readers unescape it."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "\\$")
    return f'"{escaped}"'


def _github_line(name: str, value: str) -> str:
    """One GITHUB_ENV entry; multi-line values use a random heredoc delimiter."""
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def format_env(env: dict[str, str], fmt: str) -> str:
    """Render `env` as shell exports, a dotenv file, GITHUB_ENV entries or JSON."""
    if fmt == "shell":
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    if fmt == "dotenv":
        return "".join(f"{k}={_dotenv_quote(v)}\n" for k, v in env.items())
    if fmt == "github":
        return "".join(_github_line(k, v) for k, v in env.items())
    if fmt == "json":
        return json.dumps(env, indent=2) + "\n"
    raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")


def append_github_env(path: Path, text: str) -> int:
    """Append rendered `github` lines to $GITHUB_ENV (the next steps of the job see them); the number of lines."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
    return text.count("\n")
