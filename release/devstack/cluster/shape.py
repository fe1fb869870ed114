"""`devstack up|down|status --shape cluster`: hosts in namespaces, the nexus host, runner engines, in order."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from release.devstack import processes
from release.devstack.buildkit import ensure_buildkit
from release.devstack.buildkit_daemon import running_pid
from release.devstack.cluster import buildkit_host, buildkit_image, dns, nexus, runners, web
from release.devstack.cluster.credentials import ensure_credentials, read_credentials, write_htpasswd
from release.devstack.cluster.hosts import (
    BUILDER,
    NEXUS,
    RUNNERS,
    ClusterNet,
    Host,
    check_subnet_free,
    create_network,
    leftovers,
    netns_exists,
    remove_network,
    write_hosts_files,
)
from release.devstack.cluster.links import read_shapes, stop_delay
from release.devstack.cluster.paths import ClusterPaths
from release.devstack.cluster.topology import (
    cluster_topology,
    host_names,
    production_topology,
    render_cluster_topology,
)
from release.devstack.install import CLUSTER_PACKAGES, apt_install, ensure_installed, read_marker
from release.devstack.packages import ensure_seeded, packages_dir, served_summary
from release.devstack.paths import StackPaths
from release.devstack.ports import DEFAULT_PORT_BASE, port_layout
from release.devstack.stack import link_if_changed, state_lock, stderr_log, unmount_under, write_if_changed
from release.devstack.status import ComponentStatus, StackStatus
from release.errors import OperationError, UsageError
from release.topology.model import Topology

Log = Callable[[str], None]


@dataclass(frozen=True)
class ClusterEnv:
    """What `up --shape cluster` gives back: where the shape lives, its network, and whether anything changed."""

    paths: ClusterPaths
    net: ClusterNet
    changed: bool

    @property
    def topology_path(self) -> Path:
        """Return the shape's topology file."""
        return self.paths.topology

    def exports(self) -> str:
        """Return the lines for `eval`: the state dir only (the hosts' own environment comes with `devstack exec`)."""
        return (
            f"export FRACTALOPS_DEVSTACK_DIR={shlex.quote(str(self.paths.stack.root))}\n"
            "# run commands on a host: fractalops-release devstack exec --host runner-1 -- CMD...\n"
        )


def recorded_base(paths: ClusterPaths) -> int | None:
    """Return the port base a cluster `up` recorded in this state dir, or None."""
    try:
        return int(json.loads(paths.record.read_text())["port_base"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_recorded(state_dir: Path) -> bool:
    """Return whether the state dir holds a cluster shape (up, or a failed up not yet taken down)."""
    return recorded_base(ClusterPaths(StackPaths(Path(state_dir).absolute()))) is not None


def resolve(state_dir: Path, port_base: int | None, *, existing: bool = False) -> tuple[ClusterPaths, ClusterNet]:
    """Return paths and network: for an existing shape its record, else `port_base`, else the record or the default.

    `port_base` is FRACTALOPS_DEVSTACK_PORT_BASE: it places a new shape and never moves an existing one.
    """
    paths = ClusterPaths(StackPaths(Path(state_dir).absolute()))
    recorded = recorded_base(paths)
    if recorded is not None and (existing or port_base is None):
        return paths, ClusterNet(port_layout(recorded).base)
    return paths, ClusterNet(port_layout(port_base if port_base is not None else DEFAULT_PORT_BASE).base)


def _check_base(paths: ClusterPaths, net: ClusterNet) -> None:
    """Refuse to bring the shape up on another base while the recorded one still has namespaces."""
    recorded = recorded_base(paths)
    if recorded is not None and recorded != net.base and leftovers(ClusterNet(recorded)):
        raise UsageError(
            f"the cluster shape in {paths.stack.root} runs on port base {recorded}, not {net.base}. "
            "What to do: `devstack down` first, or unset the port base override."
        )


def up(state_dir: Path, port_base: int | None = None, log: Log = stderr_log) -> ClusterEnv:
    """Create the hosts, start the nexus host's registries and the runners' engines; log the runners in."""
    paths, net = resolve(state_dir, port_base)
    with state_lock(paths.stack):
        _check_base(paths, net)
        binaries = ensure_installed(paths.stack, log)
        apt_install(CLUSTER_PACKAGES, log)
        # The images' base rootfs and packages, seeded once on the machine (shared with the loopback shape).
        seed = ensure_seeded(paths.stack, log)
        production = production_topology()
        nexus_host, builder_host = net.host(NEXUS), net.host(BUILDER)
        topology = cluster_topology(production, nexus_host.address)
        paths.root.mkdir(parents=True, exist_ok=True)
        first = not netns_exists(net.hub)
        if first:
            check_subnet_free(net)
        # Recorded before anything is created, so `down` finds this shape's names even if `up` fails half-way.
        write_if_changed(paths.record, json.dumps({"port_base": net.base, "subnet": str(net.subnet)}) + "\n")
        started: list[tuple[str, str]] = []
        try:
            created = create_network(net, log)
            names = host_names(topology, nexus_host.address, builder_host.address)
            write_hosts_files(net, names)
            # Before any engine starts: `ip netns exec` binds the files of /etc/netns/<ns>/ when a process starts.
            dns.write_resolv_files(net, nexus_host.address)
            wrote = write_if_changed(paths.topology, render_cluster_topology(production, nexus_host.address))
            link_if_changed(paths.bin_dir / "docker", binaries.docker)
            credentials = ensure_credentials(paths.secrets)
            nexus_folder = paths.host(NEXUS)
            if dns.start(nexus_folder, nexus_host, names, binaries.engine_path, log):
                started.append((NEXUS, dns.DNS))
            reconfigured = nexus.write_configs(nexus_folder, topology, nexus_host, paths.htpasswd)
            if write_htpasswd(paths.htpasswd, credentials):
                reconfigured |= {c.component for c in nexus.connectors(topology, nexus_host) if c.authenticated}
            for component in nexus.start(nexus_folder, topology, nexus_host, binaries, reconfigured, log):
                started.append((NEXUS, component))
            if web.start(nexus_folder, topology, nexus_host, seed, binaries.engine_path, log):
                started.append((NEXUS, web.NEXUS_WEB))
            seeded = nexus.seed_upstream(nexus_host, binaries, log)
            seeded += ["debian"] if nexus.seed_debian(nexus_folder, nexus_host, seed, log) else []
            # moby/buildkit for the runners' docker-container builders: the project's buildkitd on that same base.
            image = buildkit_image.ensure_image(
                paths.stack, seed, ensure_buildkit(paths.stack.root / "buildkit", log), log
            )
            seeded += ["buildkit"] if buildkit_image.seed_upstream(nexus_host, image, log) else []
            logged_in: list[str] = []
            for name in RUNNERS:
                folder, host = paths.host(name), net.host(name)
                changed = runners.write_configs(folder, topology, binaries)
                if runners.start(folder, host, binaries, changed, log):
                    started.append((name, runners.DOCKERD))
                env = runners.client_env(folder, paths.bin_dir, binaries)
                logged_in += runners.login(folder, topology, credentials, env, log)
            builder_folder = paths.host(BUILDER)
            if buildkit_host.start(builder_folder, paths.stack.root, builder_host, topology, log):
                started.append((BUILDER, "buildkitd"))
            for name in RUNNERS:
                env = {
                    **runners.client_env(paths.host(name), paths.bin_dir, binaries),
                    "FRACTALOPS_TOPOLOGY": str(paths.topology),
                }
                buildkit_host.add_to_runner(builder_folder, paths.host(name), net.host(name), topology, env, log)
        except BaseException:
            _undo(paths, net, started, remove_all=first, log=log)
            raise
        changed = bool(created or started or seeded or wrote or logged_in or seed.changed)
        what = ", ".join(f"{h} {c}" for h, c in started) or "already running"
        log(f"devstack: cluster shape up on {net.subnet} ({what}); {paths.root}")
        return ClusterEnv(paths=paths, net=net, changed=changed)


def _undo(paths: ClusterPaths, net: ClusterNet, started: list[tuple[str, str]], *, remove_all: bool, log: Log) -> None:
    """Stop what a failed `up` started; when it created the network, take the whole shape down again."""
    if remove_all:
        log("devstack: cluster up failed; taking the shape down again")
        _teardown(paths, net, log)
        return
    for host, component in reversed(started):
        if host == BUILDER:
            buildkit_host.stop(paths.host(BUILDER), log)
            continue
        pid = processes.stop(paths.host(host), component, timeout=30.0)
        if pid is not None:
            log(f"devstack: cluster up failed; stopped {host} {component} (pid {pid}) again")


def _teardown(paths: ClusterPaths, net: ClusterNet, log: Log) -> list[str]:
    """Stop every process, delete every namespace and link, unmount what is left; return what was stopped or removed."""
    done: list[str] = []
    for host in net.hosts():
        if stop_delay(paths.host(host.name)) is not None:
            done.append(f"{host.name} link-delay")
    if buildkit_host.stop(paths.host(BUILDER), log) is not None:
        done.append(f"{BUILDER} buildkitd")
    for name in RUNNERS:
        if runners.stop(paths.host(name), name, log) is not None:
            done.append(f"{name} {runners.DOCKERD}")
    for component, stop in ((web.NEXUS_WEB, web.stop), (dns.DNS, dns.stop)):
        if stop(paths.host(NEXUS), log) is not None:
            done.append(f"{NEXUS} {component}")
    done += [f"{NEXUS} {c}" for c in nexus.stop(paths.host(NEXUS), log)]
    removed = remove_network(net, log)
    for name in RUNNERS:
        if runners.wipe(paths.host(name)):
            log(f"devstack: {name}'s engine state deleted (the next `up` starts it empty)")
    if buildkit_host.wipe(paths.host(BUILDER)):
        log("devstack: the shared builder's cache deleted (the next `up` starts it empty)")
    for mount in unmount_under(paths.root):
        log(f"devstack: unmounted {mount}")
    paths.links.unlink(missing_ok=True)
    if removed:
        log(f"devstack: removed {', '.join(removed)}")
    return done + removed


def down(state_dir: Path, log: Log = stderr_log) -> list[str]:
    """Take the cluster shape down: processes, namespaces, links, /etc/netns files, mounts; check nothing is left."""
    paths, net = resolve(state_dir, None, existing=True)
    if recorded_base(paths) is None:
        return []
    with state_lock(paths.stack):
        done = _teardown(paths, net, log)
        left = leftovers(net)
        running = [f"{h} {c}" for h, c in _components() if processes.running(paths.host(h), c)]
        if running_pid(buildkit_host.layout(paths.host(BUILDER))) is not None:
            running.append(f"{BUILDER} buildkitd")
        if left or running:
            raise OperationError(
                f"devstack down: the cluster shape left {', '.join(left + running)}. "
                "What to do: remove them by hand (`ip netns delete`, `kill`), then `devstack down` again."
            )
        paths.record.unlink(missing_ok=True)
    log(f"devstack: cluster shape down ({len(done)} processes and namespaces removed)")
    return done


def _components() -> list[tuple[str, str]]:
    """Return every (host, component) the shape runs."""
    registries = [(NEXUS, f"registry-{role}") for role in nexus.ROLES]
    return [*registries, (NEXUS, web.NEXUS_WEB), (NEXUS, dns.DNS), *((r, runners.DOCKERD) for r in RUNNERS)]


def _service_status(
    component: str, paths: ClusterPaths, topology: Topology, host: Host, running: bool
) -> tuple[str, str, bool]:
    """Return endpoint, detail and health of the nexus host's web port or DNS."""
    if component == web.NEXUS_WEB:
        where = web.endpoint(topology, host)
        if not running:
            return where, "not running", False
        if not web.answers(topology, host):
            return where, f"runs but does not answer; see {paths.host(NEXUS).logfile(component)}", False
        return where, f"serves {served_summary(packages_dir(paths.stack))}", True
    where, name = f"{host.address}:{dns.DNS_PORT}", topology.nexus.cluster_host
    if not running:
        return where, "not running", False
    answer = dns.lookup(host.address, name)
    if answer != host.address:
        return (
            where,
            f"runs but answers {name} with {answer or 'nothing'}; see {paths.host(NEXUS).logfile(component)}",
            False,
        )
    return where, f"answers {name} ({answer}) to every host", True


def status(state_dir: Path) -> StackStatus:
    """Return the hosts, what runs on each, how each link is shaped and what each registry holds."""
    paths, net = resolve(state_dir, None, existing=True)
    recorded = recorded_base(paths) is not None
    binaries = read_marker(paths.stack)
    shapes = read_shapes(paths.links)
    components = [
        ComponentStatus(
            name="hub",
            running=netns_exists(net.hub),
            healthy=netns_exists(net.hub),
            endpoint=f"{net.subnet} (root link {net.root_link} {net.root_address})",
            detail="" if netns_exists(net.hub) else f"no namespace {net.hub}",
        )
    ]
    for host in net.hosts():
        exists = netns_exists(host.namespace)
        shape = shapes.get(host.name)
        components.append(
            ComponentStatus(
                name=host.name,
                running=exists,
                healthy=exists,
                endpoint=f"{host.address} (netns {host.namespace})",
                detail=f"link {shape.describe() if shape else 'unshaped'}" if exists else "no namespace",
            )
        )
    credentials = read_credentials(paths.secrets) if recorded else None
    topology = cluster_topology(production_topology(), net.host(NEXUS).address) if recorded else None
    nexus_host = net.host(NEXUS)
    held = nexus.holdings(nexus_host, topology, credentials) if topology and netns_exists(nexus_host.namespace) else {}
    for host_name, component in _components():
        folder = paths.host(host_name)
        tracked = processes.running(folder, component)
        detail = "not running" if tracked is None else ""
        endpoint = f"unix://{folder.docker_socket}"
        healthy = tracked is not None
        if component.startswith("registry-") and topology is not None:
            connector = next(c for c in nexus.connectors(topology, nexus_host) if c.component == component)
            endpoint = f"{nexus_host.address}:{connector.port}"
            found = held.get(connector.role, {})
            if tracked is not None and isinstance(found, str):
                detail, healthy = f"runs but cannot be read: {found}", False
            elif tracked is not None and not isinstance(found, str):
                detail = f"holds: {nexus.describe_holdings(found)}"
        elif component in (web.NEXUS_WEB, dns.DNS) and topology is not None:
            endpoint, detail, healthy = _service_status(component, paths, topology, nexus_host, tracked is not None)
        elif healthy and not runners.engine_answers(folder):
            detail, healthy = f"runs but does not answer; see {folder.logfile(component)}", False
        components.append(
            ComponentStatus(
                name=f"{host_name}/{component}",
                running=tracked is not None,
                healthy=healthy,
                pid=tracked.pid if tracked else None,
                endpoint=endpoint,
                detail=detail,
            )
        )
    builder_pid = running_pid(buildkit_host.layout(paths.host(BUILDER)))
    builder_address = f"{net.host(BUILDER).address}, mutual TLS"
    components.append(
        ComponentStatus(
            name=f"{BUILDER}/buildkitd",
            running=builder_pid is not None,
            healthy=builder_pid is not None,
            pid=builder_pid,
            endpoint=f"{buildkit_host.endpoint(topology)} ({builder_address})" if topology else builder_address,
            detail="" if builder_pid else "not running",
        )
    )
    return StackStatus(
        state_dir=f"{paths.stack.root} (cluster shape{'' if recorded else ': not up'})",
        components=components,
        topology=str(paths.topology) if paths.topology.exists() else "",
        installed=binaries is not None,
    )
