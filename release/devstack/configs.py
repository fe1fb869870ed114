"""Pure renderers of the stack's configuration files: engine, containerd, registries, topology, exports."""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from release.devstack.network import bridge_address, bridge_name
from release.devstack.paths import StackPaths
from release.devstack.ports import HOST, PortLayout

if TYPE_CHECKING:
    from release.topology.model import Topology

BUILDCACHE_REPOSITORY = "fractalops/buildcache"
BASE_IMAGE_REPOSITORY = "library/busybox"
BASE_IMAGE_TAGS = ("1.36",)
REGISTRY_ROLES = ("upstream", "hosted", "pull-through")


def dump_yaml(data: dict[str, Any]) -> str:
    """Return block-style YAML text for a plain mapping."""
    yaml = YAML()
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def stack_topology(ports: PortLayout) -> Topology:
    """Return the stack's topology as the validated model."""
    from release.topology.model import Topology

    return Topology.model_validate(topology(ports))


def daemon_config(paths: StackPaths, ports: PortLayout, trusted: Sequence[Topology] = ()) -> dict[str, Any]:
    """Return the engine's daemon.json: own roots and socket, containerd image store, registries from the topology.

    The docker.io mirror and the plain-HTTP registries come from the stack's topology (and those of `trusted`).
    """
    from release.topology.buildkitd import daemon_registries

    registries = daemon_registries(stack_topology(ports))
    for extra in trusted:
        registries["insecure-registries"] += daemon_registries(extra)["insecure-registries"]
    registries["insecure-registries"] = list(dict.fromkeys(registries["insecure-registries"]))
    return {
        "data-root": str(paths.docker_data_root),
        "exec-root": str(paths.docker_exec_root),
        "pidfile": str(paths.docker_exec_root / "dockerd.pid"),
        "hosts": [f"unix://{paths.docker_socket}"],
        "containerd": str(paths.containerd_socket),
        "features": {"containerd-snapshotter": True},
        **registries,
        "bridge": bridge_name(ports),
        "iptables": False,
        "ip6tables": False,
        "ip-forward": False,
        "ip-masq": False,
        "userland-proxy": False,
        "log-level": "info",
    }


def render_daemon_config(paths: StackPaths, ports: PortLayout, trusted: Sequence[Topology] = ()) -> str:
    """Return daemon.json text."""
    return json.dumps(daemon_config(paths, ports, trusted), indent=2) + "\n"


def render_containerd_config(paths: StackPaths) -> str:
    """Return the stack's containerd config.toml (its own root, state and sockets; no CRI)."""
    sock = paths.containerd_socket
    return (
        "version = 2\n"
        f'root = "{paths.containerd_root}"\n'
        f'state = "{paths.containerd_state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "\n[grpc]\n"
        f'  address = "{sock}"\n'
        "\n[ttrpc]\n"
        f'  address = "{sock}.ttrpc"\n'
        "\n[debug]\n"
        '  address = ""\n'
        "\n[metrics]\n"
        '  address = ""\n'
    )


def registry_port(ports: PortLayout, role: str) -> int:
    """Return the port of a registry role."""
    return {"upstream": ports.upstream, "hosted": ports.hosted, "pull-through": ports.pull_through}[role]


def registry_config(paths: StackPaths, ports: PortLayout, role: str) -> dict[str, Any]:
    """Return a CNCF distribution config; the pull-through role proxies the upstream registry."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": f"registry-{role}"}},
        "storage": {
            "filesystem": {"rootdirectory": str(paths.registry_data / role)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": f"{HOST}:{registry_port(ports, role)}",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    if role == "pull-through":
        config["proxy"] = {"remoteurl": f"http://{HOST}:{ports.upstream}"}
    return config


def render_registry_config(paths: StackPaths, ports: PortLayout, role: str) -> str:
    """Return a registry config as YAML text."""
    return dump_yaml(registry_config(paths, ports, role))


def topology(ports: PortLayout) -> dict[str, Any]:
    """Return the topology of this stack in the schema the release driver loads."""
    hosted = f"{HOST}:{ports.hosted}"
    return {
        "nexus": {
            "service": "nexus",
            "namespace": "nexus",
            "host": HOST,
            "public_url": f"http://{hosted}",
            "web_port": ports.nexus_web,
            "docker_group_port": ports.pull_through,
            "docker_internal_port": ports.hosted,
            "repositories": {"npm": "npm-group", "pypi": "pypi-group", "apt_debian": "apt-debian"},
            # The nexus web stand-in also listens on the engine's bridge: RUN steps cannot reach 127.0.0.1.
            "packages_host": bridge_address(ports),
        },
        "registry_cache": {
            "host_ip": HOST,
            "buildcache_ref": f"{hosted}/{BUILDCACHE_REPOSITORY}",
            "docker_proxy_port": ports.pull_through,
            "ghcr_proxy_port": ports.pull_through,
        },
        "node_mirror": {"mode": "nodeport", "node_port": ports.pull_through, "pull_username": "shim-puller"},
        "release": {"image_registry": hosted, "scheme": "http"},
    }


def render_topology(ports: PortLayout) -> str:
    """Return the topology file text."""
    header = "# Topology of the local devstack (written by `devstack up`; do not edit).\n"
    return header + dump_yaml(topology(ports))


def stack_env(paths: StackPaths) -> dict[str, str]:
    """Return the environment that points docker, buildx and the release driver at the stack."""
    return {
        "DOCKER_HOST": f"unix://{paths.docker_socket}",
        "DOCKER_CONFIG": str(paths.docker_config),
        "FRACTALOPS_TOPOLOGY": str(paths.topology),
        "FRACTALOPS_DEVSTACK_DIR": str(paths.root),
    }


def render_exports(paths: StackPaths) -> str:
    """Return shell export lines for the stack, PATH first so its own docker client wins."""
    lines = [f'export PATH={shlex.quote(str(paths.bin_dir))}:"$PATH"']
    lines += [f"export {key}={shlex.quote(value)}" for key, value in stack_env(paths).items()]
    return "\n".join(lines) + "\n"


def render_docker_client_config() -> str:
    """Return the stack's docker client config.json (no credentials, no user settings)."""
    return json.dumps({"auths": {}}, indent=2) + "\n"


def render_seed_dockerfile() -> str:
    """Return the Dockerfile of the offline base image: busybox-static FROM scratch."""
    return (
        "# Offline stand-in for docker.io/library/busybox, from Debian's busybox-static.\n"
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        'CMD ["/bin/sh"]\n'
    )
