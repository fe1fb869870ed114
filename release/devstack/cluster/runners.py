"""Runner hosts: one Docker engine each (own data root, exec root and socket), started inside the runner's namespace."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from release.adapters import process
from release.devstack import processes
from release.devstack.cluster.credentials import Credentials, config_has_auths, secure_file
from release.devstack.cluster.hosts import Host, daemon_in_netns
from release.devstack.install import Binaries
from release.devstack.paths import StackPaths
from release.devstack.probes import unix_http_get
from release.errors import EngineError
from release.topology.buildkitd import daemon_registries
from release.topology.model import Topology

Log = Callable[[str], None]
DOCKERD = "dockerd"
READY_TIMEOUT = 60.0


def daemon_config(folder: StackPaths, topology: Topology) -> dict[str, Any]:
    """Return a runner engine's daemon.json: its own roots and socket, the containerd image store, registries from the topology.

    The docker.io mirror (the group connector) and the plain-HTTP registries (exactly the topology's connectors)
    come from `daemon_registries`, the renderer the loopback stack uses. The engine starts its own containerd (one
    mount namespace for both) and manages iptables inside the runner's namespace only, so RUN steps reach the
    nexus host through NAT as a CI runner's builds reach Nexus.
    """
    return {
        "data-root": str(folder.docker_data_root),
        "exec-root": str(folder.docker_exec_root),
        "pidfile": str(folder.docker_exec_root / "dockerd.pid"),
        "hosts": [f"unix://{folder.docker_socket}"],
        "features": {"containerd-snapshotter": True},
        **daemon_registries(topology),
        "log-level": "info",
    }


def render_daemon_config(folder: StackPaths, topology: Topology) -> str:
    """Return daemon.json text."""
    return json.dumps(daemon_config(folder, topology), indent=2) + "\n"


def write_configs(folder: StackPaths, topology: Topology, binaries: Binaries) -> bool:
    """Write the runner's daemon.json and docker client folder; return whether daemon.json changed."""
    from release.devstack.stack import link_if_changed, write_if_changed

    for directory in (folder.etc, folder.run, folder.logs, folder.docker_config / "cli-plugins"):
        directory.mkdir(parents=True, exist_ok=True)
    folder.docker_config.chmod(0o700)
    config = folder.docker_config / "config.json"
    if not config.exists():
        write_if_changed(config, json.dumps({"auths": {}}, indent=2) + "\n")
    secure_file(config)
    link_if_changed(folder.docker_config / "cli-plugins" / "docker-buildx", binaries.docker_buildx)
    return write_if_changed(folder.config_file("daemon.json"), render_daemon_config(folder, topology))


def engine_answers(folder: StackPaths) -> bool:
    """Return whether the runner's engine answers `/_ping`."""
    reply = unix_http_get(folder.docker_socket, "/_ping")
    return reply.status == 200 and reply.body.strip() == b"OK"


def wait_ready(folder: StackPaths, name: str, timeout: float = READY_TIMEOUT) -> None:
    """Wait until the engine answers; raise with its log's cause when it died or stayed silent."""
    from release.devstack.stack import wait_answering

    wait_answering(folder, [DOCKERD], lambda _: engine_answers(folder), timeout, detail=f"of {name} ")


def start(folder: StackPaths, host: Host, binaries: Binaries, reconfigured: bool, log: Log) -> bool:
    """Start the runner's engine inside its namespace unless it runs (restart it when reconfigured); return whether it started."""
    tracked = processes.running(folder, DOCKERD)
    if tracked is not None and reconfigured:
        log(f"devstack: restarting {host.name}'s engine (configuration changed)")
        stop(folder, host.name, log)
        tracked = None
    if tracked is not None:
        return False
    folder.docker_socket.unlink(missing_ok=True)
    (folder.docker_exec_root / "dockerd.pid").unlink(missing_ok=True)
    log(f"devstack: starting {host.name}'s engine in {host.namespace}")
    argv = daemon_in_netns(host.namespace, [binaries.dockerd, "--config-file", folder.config_file("daemon.json")])
    processes.start(folder, DOCKERD, argv, env={"PATH": binaries.engine_path})
    wait_ready(folder, host.name)
    return True


def stop(folder: StackPaths, name: str, log: Log) -> int | None:
    """Stop the runner's engine (it stops its own containerd); return its pid if it ran."""
    pid = processes.stop(folder, DOCKERD, timeout=30.0)
    if pid is not None:
        log(f"devstack: stopped {name}'s engine (pid {pid})")
    return pid


def state_home(folder: StackPaths) -> Path:
    """Return the runner's XDG_STATE_HOME (what the toolkit keeps per user there, e.g. builders' buildkitd.toml)."""
    return folder.root / "state"


def wipe(folder: StackPaths) -> bool:
    """Delete a stopped runner's engine state (data and exec roots): runners are ephemeral, each `up` starts them empty."""
    from release.devstack.stack import unmount_under

    if processes.running(folder, DOCKERD) is not None:
        raise EngineError(f"wiping {folder.root.name}: its engine still runs. What to do: `devstack down` again.")
    unmount_under(folder.root)
    found = False
    for state in (folder.docker_data_root, folder.docker_exec_root, folder.docker_config, state_home(folder)):
        if state.exists():
            shutil.rmtree(state)
            found = True
    return found


def client_env(folder: StackPaths, bin_dir: Path, binaries: Binaries) -> dict[str, str]:
    """Return the environment of the runner's docker client."""
    return {
        "PATH": f"{bin_dir}:{binaries.engine_path}",
        "DOCKER_HOST": f"unix://{folder.docker_socket}",
        "DOCKER_CONFIG": str(folder.docker_config),
    }


def login(folder: StackPaths, topology: Topology, credentials: Credentials, env: dict[str, str], log: Log) -> list[str]:
    """`docker login` to both connectors into the runner's DOCKER_CONFIG (password on stdin); return the registries."""
    registries = [topology.nexus.docker_internal_endpoint, topology.nexus.docker_group_endpoint]
    config = folder.docker_config / "config.json"
    if config_has_auths(config, registries):
        return []
    for registry in registries:
        process.run(
            ["docker", "login", "--username", credentials.username, "--password-stdin", registry],
            env=env,
            stdin=credentials.password,
            timeout=60.0,
            what=f"docker login {registry} for {folder.root.name}",
            hint=f"read {folder.logfile(DOCKERD)} and the nexus host's registry logs",
        )
    secure_file(config)
    log(f"devstack: {folder.root.name} logged in to {', '.join(registries)}")
    return registries
