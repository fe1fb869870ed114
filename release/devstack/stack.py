"""Bring the devstack up, take it down, report its status: the orchestration of the other modules."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from release.adapters import process
from release.devstack import processes
from release.devstack.baseimage import ensure_debian_mirrored, seed_debian_image
from release.devstack.commands import tail
from release.devstack.configs import (
    REGISTRY_ROLES,
    registry_port,
    render_containerd_config,
    render_daemon_config,
    render_docker_client_config,
    render_exports,
    render_registry_config,
    render_topology,
    stack_env,
)
from release.devstack.install import Binaries, ensure_installed, read_marker
from release.devstack.network import (
    bridge_address,
    bridge_name,
    ensure_bridge,
    release_ports,
    remove_bridge,
    reserve_ports,
)
from release.devstack.nexusweb import STATUS_PATH as NEXUS_STATUS_PATH
from release.devstack.packages import ensure_seeded, packages_dir, served_summary
from release.devstack.paths import StackPaths
from release.devstack.ports import DEFAULT_PORT_BASE, HOST, PORT_BASE_ENV, PortLayout, port_layout
from release.devstack.probes import http_request, port_listening, unix_http_get, unix_socket_accepts
from release.devstack.seed import catalog, ensure_mirrored, registry_answers, seed_base_image
from release.devstack.status import ComponentStatus, StackStatus
from release.errors import EngineError, OperationError, UsageError
from release.fsutil import file_lock

Log = Callable[[str], None]
READY_TIMEOUT = 60.0
CONTAINERD = "containerd"
DOCKERD = "dockerd"
NEXUS_WEB = "nexus-web"


def stderr_log(message: str) -> None:
    """Write a progress message to stderr (stdout carries only export lines)."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StackEnv:
    """What `up` gives back: where the stack lives, its ports, and the environment for tools."""

    paths: StackPaths
    ports: PortLayout
    env: dict[str, str]
    changed: bool

    @property
    def topology_path(self) -> Path:
        """Return the topology file of the stack."""
        return self.paths.topology

    @property
    def path_prefix(self) -> str:
        """Return the directory to put first on PATH (the engine's own docker client)."""
        return str(self.paths.bin_dir)

    def exports(self) -> str:
        """Return the shell export lines (for `eval "$(… devstack up)"`)."""
        return render_exports(self.paths)


def registry_component(role: str) -> str:
    """Return the component name of a registry role."""
    return f"registry-{role}"


# What must answer before a component starts (the pull-through registry dials its upstream at start).
DEPENDS_ON = {DOCKERD: [CONTAINERD], "registry-pull-through": ["registry-upstream"]}


def component_names() -> list[str]:
    """Return every component, in start order."""
    return [CONTAINERD, *(registry_component(r) for r in REGISTRY_ROLES), DOCKERD, NEXUS_WEB]


def component_port(component: str, ports: PortLayout) -> int | None:
    """Return the loopback port a component listens on (None for the engine and containerd)."""
    if component == NEXUS_WEB:
        return ports.nexus_web
    if component.startswith("registry-"):
        return registry_port(ports, component.removeprefix("registry-"))
    return None


def write_if_changed(path: Path, text: str) -> bool:
    """Write a file only when its content differs; return whether it did."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def link_if_changed(link: Path, target: str) -> bool:
    """Point a symlink at a target only when it does not already; return whether it changed."""
    if link.is_symlink() and os.readlink(link) == target:
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    return True


def state_lock(paths: StackPaths) -> AbstractContextManager[None]:
    """Hold an exclusive lock on the state dir so two up/down runs do not interleave."""
    return file_lock(paths.root / ".lock")


def recorded_port_base(paths: StackPaths) -> int | None:
    """Return the port base recorded by the last `up` in this state dir."""
    try:
        return int(json.loads((paths.root / "stack.json").read_text())["port_base"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve(state_dir: Path, port_base: int | None, *, existing: bool = False) -> tuple[StackPaths, PortLayout]:
    """Return paths and ports: `port_base` (FRACTALOPS_DEVSTACK_PORT_BASE), else what the state dir recorded, else the default.

    For an existing stack (`down`, `status`) the state dir's own record wins over `port_base`: an exported
    port base must never aim them at another stack's ports and bridge.
    """
    paths = StackPaths(Path(state_dir).absolute())
    recorded = recorded_port_base(paths)
    if existing and recorded is not None:
        return paths, port_layout(recorded)
    if port_base is not None:
        return paths, port_layout(port_base)
    return paths, port_layout(recorded if recorded is not None else DEFAULT_PORT_BASE)


def engine_env(paths: StackPaths, binaries: Binaries) -> dict[str, str]:
    """Return the environment for the engine's processes and docker client calls."""
    env = stack_env(paths)
    env["PATH"] = binaries.engine_path
    return env


def write_configs(paths: StackPaths, ports: PortLayout, binaries: Binaries) -> set[str]:
    """Write every configuration file; return the components whose configuration changed."""
    changed: set[str] = set()
    for directory in (
        paths.etc,
        paths.run,
        paths.logs,
        paths.registry_data,
        paths.docker_config / "cli-plugins",
    ):
        directory.mkdir(parents=True, exist_ok=True)
    if write_if_changed(paths.config_file("containerd.toml"), render_containerd_config(paths)):
        changed.add(CONTAINERD)
    if write_if_changed(paths.config_file("daemon.json"), render_daemon_config(paths, ports)):
        changed.add(DOCKERD)
    for role in REGISTRY_ROLES:
        if write_if_changed(paths.config_file(f"registry-{role}.yml"), render_registry_config(paths, ports, role)):
            changed.add(registry_component(role))
    write_if_changed(paths.docker_config / "config.json", render_docker_client_config())
    link_if_changed(paths.docker_config / "cli-plugins" / "docker-buildx", binaries.docker_buildx)
    link_if_changed(paths.bin_dir / "docker", binaries.docker)
    return changed


def argv_for(component: str, paths: StackPaths, ports: PortLayout, binaries: Binaries) -> list[str]:
    """Return the command line of a component."""
    if component == CONTAINERD:
        return [binaries.containerd, "--config", str(paths.config_file("containerd.toml"))]
    if component == DOCKERD:
        return [binaries.dockerd, "--config-file", str(paths.config_file("daemon.json"))]
    if component == NEXUS_WEB:
        listen = [f"{HOST}:{ports.nexus_web}", f"{bridge_address(ports)}:{ports.nexus_web}"]
        return [
            sys.executable,
            "-m",
            "release.devstack.nexusweb",
            *(arg for address in listen for arg in ("--listen", address)),
            "--root",
            str(packages_dir(paths)),
        ]
    role = component.removeprefix("registry-")
    return [binaries.registry, "serve", str(paths.config_file(f"registry-{role}.yml"))]


def component_ready(component: str, paths: StackPaths, ports: PortLayout) -> bool:
    """Return True if a component answers: containerd's socket, the engine's /_ping, a registry's /v2/."""
    if component == CONTAINERD:
        return unix_socket_accepts(paths.containerd_socket)
    if component == DOCKERD:
        reply = unix_http_get(paths.docker_socket, "/_ping")
        return reply.status == 200 and reply.body.strip() == b"OK"
    if component == NEXUS_WEB:
        return all(
            http_request(f"http://{host}:{ports.nexus_web}{NEXUS_STATUS_PATH}").status == 200
            for host in (HOST, bridge_address(ports))
        )
    return registry_answers(registry_port(ports, component.removeprefix("registry-")))


def component_endpoint(component: str, paths: StackPaths, ports: PortLayout) -> str:
    """Return where a component listens, for status output."""
    if component == CONTAINERD:
        return f"unix://{paths.containerd_socket}"
    if component == DOCKERD:
        return f"unix://{paths.docker_socket}"
    if component == NEXUS_WEB:
        return f"127.0.0.1:{ports.nexus_web} and {bridge_address(ports)}:{ports.nexus_web} (build steps)"
    return f"127.0.0.1:{registry_port(ports, component.removeprefix('registry-'))}"


def wait_ready(components: list[str], paths: StackPaths, ports: PortLayout, timeout: float = READY_TIMEOUT) -> None:
    """Wait until the components answer; raise naming the one that died or never answered."""
    wait_answering(paths, components, lambda c: component_ready(c, paths, ports), timeout)


def wait_answering(
    paths: StackPaths,
    components: list[str],
    answers: Callable[[str], bool],
    timeout: float = READY_TIMEOUT,
    detail: str = "",
) -> None:
    """Wait until `answers` holds for each started component; raise (with its log) for one that died or stayed silent.

    `detail` goes before the error's words, e.g. "of runner-1 ".
    """
    deadline = time.monotonic() + timeout
    pending = list(components)
    while pending:
        pending = [c for c in pending if not answers(c)]
        for component in pending:
            if processes.running(paths, component) is None:
                raise failure(component, paths, f"{detail}exited right after start")
        if pending and time.monotonic() > deadline:
            raise failure(pending[0], paths, f"{detail}did not answer within {timeout:.0f} s")
        if pending:
            time.sleep(0.1)


def failure(component: str, paths: StackPaths, what: str) -> OperationError:
    """Return the typed error for a component that failed to start, with its log tail and a fix."""
    log_path = paths.logfile(component)
    try:
        text = log_path.read_text(errors="replace").rsplit("--- devstack start", 1)[-1]
    except OSError:
        text = "(no log)"
    causes = [
        line
        for line in text.splitlines()
        if line.startswith("panic:") or "level=fatal" in line or "level=error" in line
    ]
    log_tail = "\n".join(causes[-3:]) if causes else tail(text, 12)
    error = EngineError if component in (CONTAINERD, DOCKERD) else OperationError
    return error(
        f"devstack {component} {what}; log {log_path}:\n{log_tail}\n"
        "What to do: fix the cause shown in the log (a port in use: set "
        f"{PORT_BASE_ENV}), then `devstack down` and `devstack up`."
    )


def check_port_free(component: str, paths: StackPaths, ports: PortLayout) -> None:
    """Refuse to start a registry or the nexus web stand-in whose port something else already listens on."""
    port = component_port(component, ports)
    if port is not None and port_listening(port):
        raise UsageError(
            f"devstack {component}: port 127.0.0.1:{port} is already in use by another process. "
            f"What to do: stop it, or choose another port base with {PORT_BASE_ENV}."
        )


def start_component(component: str, paths: StackPaths, ports: PortLayout, binaries: Binaries, log: Log) -> None:
    """Start one component that is not running (clearing stale sockets first)."""
    check_port_free(component, paths, ports)
    if component == CONTAINERD:
        paths.containerd_socket.unlink(missing_ok=True)
    if component == DOCKERD:
        paths.docker_socket.unlink(missing_ok=True)
        (paths.docker_exec_root / "dockerd.pid").unlink(missing_ok=True)
    log(f"devstack: starting {component}")
    env = engine_env(paths, binaries)
    if component == NEXUS_WEB:
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # the same `release` package as this process
    processes.start(paths, component, argv_for(component, paths, ports, binaries), env=env)


def check_running_base(paths: StackPaths, ports: PortLayout) -> None:
    """Refuse to move a running stack to other ports without `down` first."""
    recorded = recorded_port_base(paths)
    if recorded is not None and recorded != ports.base and any(processes.running(paths, c) for c in component_names()):
        raise UsageError(
            f"the devstack in {paths.root} runs on port base {recorded}, not {ports.base}. "
            "What to do: `devstack down` first, or unset the port base override."
        )


def up(state_dir: Path, port_base: int | None = None, log: Log = stderr_log) -> StackEnv:
    """Install what is missing, start what is not running, write the topology; return the stack env.

    `port_base` (None: the recorded one, else the default) places a new stack; a running one must be taken down first.
    """
    paths, ports = resolve(state_dir, port_base)
    with state_lock(paths):
        check_running_base(paths, ports)
        binaries = ensure_installed(paths, log)
        # Recorded before anything starts, so a later `down` knows this stack's ports even if `up` fails.
        write_if_changed(paths.root / "stack.json", json.dumps({"port_base": ports.base}) + "\n")
        # A client socket could otherwise be handed one of the stack's ports as its ephemeral port while a
        # registry (re)starts; reserved ports are never handed out (root only; without it, a clash shows in the log).
        reserve_ports(ports)
        reconfigured = write_configs(paths, ports, binaries)
        # Every port must be free before anything starts: a clash found half-way would leave a partial stack.
        for component in component_names():
            if processes.running(paths, component) is None:
                check_port_free(component, paths, ports)
        # The images' packages and base rootfs, fetched once on the host (machine-wide cache) before anything starts.
        seed = ensure_seeded(paths, log)
        started: list[str] = []
        bridge_made = False
        try:
            for component in component_names():
                tracked = processes.running(paths, component)
                if tracked is not None and component in reconfigured:
                    log(f"devstack: restarting {component} (configuration changed)")
                    processes.stop(paths, component)
                    tracked = None
                if tracked is None:
                    wait_ready(DEPENDS_ON.get(component, []), paths, ports)
                    if component in (DOCKERD, NEXUS_WEB):
                        bridge_made |= ensure_bridge(ports)  # build containers reach the nexus web stand-in on it
                    start_component(component, paths, ports, binaries, log)
                    started.append(component)
            wait_ready(component_names(), paths, ports)
            seeded = seed_base_image(paths, ports.upstream, binaries, engine_env(paths, binaries), log)
            seeded += ["mirror"] if ensure_mirrored(ports.pull_through, log) else []
            pushed = seed_debian_image(paths, ports.upstream, binaries, engine_env(paths, binaries), seed, log)
            seeded += ["debian"] if pushed else []
            seeded += ["debian-mirror"] if ensure_debian_mirrored(ports.pull_through, seed, log, pushed) else []
            wrote = write_if_changed(paths.topology, render_topology(ports))
            wrote |= write_if_changed(paths.env_file, render_exports(paths))
        except BaseException:
            undo_start(paths, ports, started, bridge_made, log)
            raise
        changed = bool(started or seeded or wrote or seed.changed)
        log(f"devstack: up ({'started ' + ', '.join(started) if started else 'already running'}); {paths.root}")
        return StackEnv(paths=paths, ports=ports, env=stack_env(paths), changed=changed)


def undo_start(paths: StackPaths, ports: PortLayout, started: list[str], bridge_made: bool, log: Log) -> None:
    """Stop what a failed `up` started (last first) and remove the bridge it made: a failed `up` leaves nothing running."""
    for component in reversed(started):
        pid = processes.stop(paths, component, timeout=30.0 if component == DOCKERD else 15.0)
        if pid is not None:
            log(f"devstack: up failed; stopped {component} (pid {pid}) again")
    if DOCKERD in started:
        leftovers = processes.pids_mentioning(str(paths.containerd_socket))
        if leftovers:
            processes.terminate(leftovers)
        unmount_under(paths.root)
    if bridge_made and remove_bridge(ports):
        log(f"devstack: up failed; deleted bridge {bridge_name(ports)} again")
    if not any(processes.running(paths, c) for c in component_names()):
        release_ports(ports)


def unmount_under(root: Path) -> list[str]:
    """Unmount what the engine left mounted inside the state folder (deepest first); return the mount points."""
    try:
        table = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    prefix = str(root.resolve())
    points = {line.split()[4].replace("\\040", " ") for line in table if len(line.split()) > 4}
    mine = sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True)
    for point in mine:
        process.run(["umount", "-l", point], check=False)
    return mine


def down(state_dir: Path, port_base: int | None = None, log: Log = stderr_log) -> list[str]:
    """Stop every process the stack started (engine first), wait for them, and check its ports are closed.

    The ports are the ones the stack recorded; `port_base` only stands in for a state dir without a record.
    """
    paths, ports = resolve(state_dir, port_base, existing=True)
    stopped: list[str] = []
    with state_lock(paths):
        order = [NEXUS_WEB, DOCKERD, *(registry_component(r) for r in REGISTRY_ROLES), CONTAINERD]
        for component in order:
            pid = processes.stop(paths, component, timeout=30.0 if component == DOCKERD else 15.0)
            if pid is not None:
                log(f"devstack: stopped {component} (pid {pid})")
                stopped.append(component)
        # Shims the stack's containerd spawned carry its socket path on their command line.
        leftovers = processes.pids_mentioning(str(paths.containerd_socket))
        if leftovers:
            log(f"devstack: stopping leftover containerd shims {leftovers}")
            processes.terminate(leftovers)
        for sock in (paths.docker_socket, paths.containerd_socket):
            sock.unlink(missing_ok=True)
        for mount in unmount_under(paths.root):
            log(f"devstack: unmounted {mount}")
        if remove_bridge(ports):
            log(f"devstack: deleted bridge {bridge_name(ports)}")
        release_ports(ports)
        still = [p for p in ports.listening().values() if port_listening(p)]
        if still:
            raise OperationError(
                f"devstack down: something still listens on 127.0.0.1 port(s) {still}, not started by this "
                f"stack's pidfiles in {paths.run}. What to do: find it with `ss -ltnp` and stop it."
            )
    log(f"devstack: down ({', '.join(stopped) or 'nothing was running'})")
    return stopped


def status(state_dir: Path, port_base: int | None = None) -> StackStatus:
    """Return what runs, where, and what is unhealthy (on the recorded ports; `port_base` stands in for none)."""
    paths, ports = resolve(state_dir, port_base, existing=True)
    binaries = read_marker(paths)
    components: list[ComponentStatus] = []
    for component in component_names():
        tracked = processes.running(paths, component)
        ready = tracked is not None and component_ready(component, paths, ports)
        detail = ""
        if tracked is None:
            detail = "not running"
            port = component_port(component, ports)
            if port is not None and port_listening(port):
                detail = "not running; its port is taken by another process"
        elif not ready:
            detail = f"runs but does not answer; see {paths.logfile(component)}"
        elif component.startswith("registry-"):
            held = catalog(registry_port(ports, component.removeprefix("registry-")))
            shown = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
            detail = f"holds: {shown or 'nothing yet'}"
        elif component == NEXUS_WEB:
            detail = f"serves {served_summary(packages_dir(paths))}"
        components.append(
            ComponentStatus(
                name=component,
                running=tracked is not None,
                healthy=ready,
                pid=tracked.pid if tracked else None,
                endpoint=component_endpoint(component, paths, ports),
                detail=detail,
            )
        )
    return StackStatus(
        state_dir=str(paths.root),
        components=components,
        topology=str(paths.topology) if paths.topology.exists() else "",
        installed=binaries is not None,
    )
