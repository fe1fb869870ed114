"""The cluster shape's hosts: network namespaces on a hub bridge, addresses from the port base, /etc/netns hosts files."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from release.adapters import process
from release.devstack.commands import run
from release.devstack.processes import terminate
from release.errors import EngineError, UsageError

Log = Callable[[str], None]

NEXUS = "nexus"
BUILDER = "builder"
RUNNERS = ("runner-1", "runner-2")
HOST_NAMES = (NEXUS, *RUNNERS, BUILDER)
# The last octet of each host on the stack's /24; .1 is the root namespace's end of its own link to the hub.
_OCTETS = {NEXUS: 2, BUILDER: 3, **{runner: 10 + n for n, runner in enumerate(RUNNERS, start=1)}}
ROOT_OCTET = 1
# The second octet of every cluster subnet (the loopback stack's bridges use 10.213, the plain-HTTP test 10.250).
SUBNET_OCTET = 214
BRIDGE = "br0"  # inside the hub namespace, so one name serves every stack
INNER_LINK = "eth0"  # a host's end of its link, inside its own namespace
NETNS_DIR = Path("/run/netns")
NETNS_ETC = Path("/etc/netns")
_NETNS_HINT = "the cluster shape needs root and iproute2 (`apt-get install iproute2`); run `devstack down` and retry"


def check_host_name(name: str) -> str:
    """Return a host name of the cluster shape; any other is a usage error naming the known ones."""
    if name not in _OCTETS:
        raise UsageError(f"--host {name!r}: not a host of the cluster shape ({', '.join(HOST_NAMES)})")
    return name


@dataclass(frozen=True)
class Host:
    """One host: its name, its network namespace, its address and its link's name on the hub bridge."""

    name: str
    namespace: str
    address: str

    @property
    def hub_link(self) -> str:
        """Return the hub's end of the host's link (named after the host; interface names are per namespace)."""
        return self.name


@dataclass(frozen=True)
class ClusterNet:
    """The names and addresses of one stack's cluster shape, all derived from its port base."""

    base: int

    @property
    def prefix(self) -> str:
        """Return the prefix of every namespace and root-side link of this stack (two stacks can coexist)."""
        return f"fx{self.base}"

    @property
    def hub(self) -> str:
        """Return the hub namespace that holds the bridge every host is linked to."""
        return f"{self.prefix}-hub"

    @property
    def root_link(self) -> str:
        """Return the root namespace's end of its link to the hub (at most 15 characters)."""
        return f"{self.prefix}-root"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        """Return the private /24 of this stack."""
        return ipaddress.IPv4Network(f"10.{SUBNET_OCTET}.{(self.base // 10) % 256}.0/24")

    def _address(self, octet: int) -> str:
        """Return the address with that last octet on the stack's subnet."""
        return str(self.subnet.network_address + octet)

    @property
    def root_address(self) -> str:
        """Return the root namespace's address on the subnet (tests and `status` reach the hosts through it)."""
        return self._address(ROOT_OCTET)

    def host(self, name: str) -> Host:
        """Return a host by name; an unknown name is a usage error naming the known ones."""
        check_host_name(name)
        return Host(name=name, namespace=f"{self.prefix}-{name}", address=self._address(_OCTETS[name]))

    def hosts(self) -> list[Host]:
        """Return every host, nexus first."""
        return [self.host(name) for name in HOST_NAMES]

    def namespaces(self) -> list[str]:
        """Return every namespace of the stack: the hosts' and the hub."""
        return [h.namespace for h in self.hosts()] + [self.hub]


def render_hosts_file(names: Mapping[str, str]) -> str:
    """Return an /etc/hosts text: localhost plus each name at its address."""
    lines = ["# Written by `fractalops-release devstack up --shape cluster`; removed by `devstack down`.",
             "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]  # fmt: skip
    lines += [f"{address}\t{name}" for name, address in names.items()]
    return "\n".join(lines) + "\n"


def netns_exists(namespace: str) -> bool:
    """Return whether a named network namespace exists."""
    return (NETNS_DIR / namespace).exists()


def link_exists(name: str, namespace: str | None = None) -> bool:
    """Return whether an interface exists (in `namespace`, else the root namespace)."""
    scope = ["-n", namespace] if namespace else []
    proc = process.run(["ip", *scope, "-j", "link", "show", "dev", name], check=False)
    return proc.returncode == 0 and bool(json.loads(proc.stdout or "[]"))


def in_netns(namespace: str, argv: Sequence[str | Path]) -> list[str]:
    """Return `argv` run inside a namespace (`ip netns exec` also puts /etc/netns/<ns>/hosts over /etc/hosts)."""
    return ["ip", "netns", "exec", namespace, *(str(a) for a in argv)]


def _cgroup_mounts(mountinfo: str) -> list[tuple[str, str, str]]:
    """Return (mount point, fs type, super options) of the cgroup mounts under /sys/fs/cgroup, parents first."""
    found: list[tuple[str, str, str]] = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        point = fields[4]
        if point == "/sys/fs/cgroup" or point.startswith("/sys/fs/cgroup/"):
            found.append((point, rest[0], rest[2]))
    return sorted(found, key=lambda entry: entry[0].count("/"))


def restore_cgroups_script(mountinfo: str) -> str:
    """Return the shell lines that mount the machine's cgroup hierarchies again under a fresh /sys.

    `ip netns exec` mounts a new sysfs (so /sys/class/net shows the namespace's links), which hides /sys/fs/cgroup;
    an engine needs it back. The mounts live in the command's private mount namespace and go with it.
    """
    lines = ["set -e"]
    for point, fstype, options in _cgroup_mounts(mountinfo):
        lines.append(f"mkdir -p {point}")
        lines.append(f"mountpoint -q {point} || mount -t {fstype} -o {options} {fstype} {point}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def daemon_in_netns(namespace: str, argv: Sequence[str | Path]) -> list[str]:
    """Return the command line that runs a daemon (an engine) in a namespace with the machine's cgroups mounted."""
    script = restore_cgroups_script(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))
    return in_netns(namespace, ["sh", "-c", script, "sh", *argv])


def _ip(args: Sequence[str], step: str) -> None:
    """Run one `ip` command; a failure is an EngineError naming the step."""
    run(["ip", *args], step=step, hint=_NETNS_HINT, error=EngineError)


def check_subnet_free(net: ClusterNet) -> None:
    """Refuse a subnet the root namespace already routes through a link that is not this stack's."""
    proc = process.run(["ip", "-j", "route", "show", "table", "main"], check=False)
    for route in json.loads(proc.stdout or "[]") if proc.returncode == 0 else []:
        dst, dev = str(route.get("dst", "")), str(route.get("dev", ""))
        if dst in ("", "default") or dev == net.root_link:
            continue
        try:
            overlaps = ipaddress.ip_network(dst, strict=False).overlaps(net.subnet)
        except ValueError:
            continue
        if overlaps:
            raise UsageError(
                f"cluster subnet {net.subnet} overlaps route {dst} on {dev}; "
                "choose another port base with FRACTALOPS_DEVSTACK_PORT_BASE"
            )


def create_network(net: ClusterNet, log: Log) -> list[str]:
    """Create the hub, the hosts and their links (what exists is kept); return what it created."""
    created: list[str] = []
    prefix_len = net.subnet.prefixlen
    if not netns_exists(net.hub):
        _ip(["netns", "add", net.hub], f"creating namespace {net.hub}")
        _ip(["-n", net.hub, "link", "set", "lo", "up"], f"bringing up lo in {net.hub}")
        created.append(net.hub)
    if not link_exists(BRIDGE, net.hub):
        _ip(["-n", net.hub, "link", "add", BRIDGE, "type", "bridge"], f"creating bridge {BRIDGE} in {net.hub}")
        _ip(["-n", net.hub, "link", "set", BRIDGE, "up"], f"bringing up {BRIDGE} in {net.hub}")
    for host in net.hosts():
        if not netns_exists(host.namespace):
            _ip(["netns", "add", host.namespace], f"creating namespace {host.namespace}")
            _ip(["-n", host.namespace, "link", "set", "lo", "up"], f"bringing up lo in {host.namespace}")
            created.append(host.namespace)
        if not link_exists(host.hub_link, net.hub):
            _ip(
                ["-n", net.hub, "link", "add", host.hub_link, "type", "veth",
                 "peer", "name", INNER_LINK, "netns", host.namespace],
                f"linking {host.namespace} to {net.hub}",
            )  # fmt: skip
            _ip(["-n", net.hub, "link", "set", host.hub_link, "master", BRIDGE], f"attaching {host.name} to {BRIDGE}")
            _ip(["-n", net.hub, "link", "set", host.hub_link, "up"], f"bringing up {host.name} in {net.hub}")
            _ip(
                ["-n", host.namespace, "addr", "add", f"{host.address}/{prefix_len}", "dev", INNER_LINK],
                f"addressing {host.namespace}",
            )
            _ip(
                ["-n", host.namespace, "link", "set", INNER_LINK, "up"], f"bringing up {INNER_LINK} in {host.namespace}"
            )
            created.append(f"{net.hub}/{host.hub_link}")
    if not link_exists(net.root_link):
        _ip(["link", "add", net.root_link, "type", "veth", "peer", "name", "root", "netns", net.hub],
            f"linking the root namespace to {net.hub}")  # fmt: skip
        _ip(["-n", net.hub, "link", "set", "root", "master", BRIDGE], f"attaching the root link to {BRIDGE}")
        _ip(["-n", net.hub, "link", "set", "root", "up"], f"bringing up the root link in {net.hub}")
        _ip(["addr", "add", f"{net.root_address}/{prefix_len}", "dev", net.root_link], f"addressing {net.root_link}")
        _ip(["link", "set", net.root_link, "up"], f"bringing up {net.root_link}")
        created.append(net.root_link)
    if created:
        log(f"devstack: cluster network {net.subnet}: created {', '.join(created)}")
    return created


def write_netns_file(folder: Path, name: str, text: str) -> None:
    """Write one file of /etc/netns/<ns>/ (0644, replaced atomically, untouched when it already says that)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists() or target.read_text() != text:
        staged = folder / f".{name}.tmp"
        staged.write_text(text)
        staged.chmod(0o644)
        staged.replace(target)


def write_hosts_files(net: ClusterNet, names: Mapping[str, str]) -> None:
    """Write /etc/netns/<ns>/hosts for every host, so each resolves the given names inside its namespace only."""
    text = render_hosts_file(names)
    for host in net.hosts():
        write_netns_file(NETNS_ETC / host.namespace, "hosts", text)


def netns_pids(namespace: str) -> list[int]:
    """Return the pids of the processes whose network namespace is `namespace`."""
    if not netns_exists(namespace):
        return []
    proc = process.run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def remove_network(net: ClusterNet, log: Log) -> list[str]:
    """Stop what still runs in the stack's namespaces, delete them (their links go with them); return what it removed."""
    removed: list[str] = []
    for namespace in net.namespaces():
        left = netns_pids(namespace)
        if left:
            log(f"devstack: stopping processes left in {namespace}: {left}")
            survivors = terminate(left)
            if survivors:
                raise EngineError(
                    f"devstack down: pids {survivors} in namespace {namespace} survived SIGKILL. "
                    f"What to do: check `ps -p {','.join(map(str, survivors))}`, then `devstack down` again."
                )
    for namespace in net.namespaces():
        if netns_exists(namespace):
            _ip(["netns", "delete", namespace], f"deleting namespace {namespace}")
            removed.append(namespace)
        folder = NETNS_ETC / namespace
        if folder.is_dir():
            for entry in folder.iterdir():
                entry.unlink()
            folder.rmdir()
    # The root link goes with the hub (its peer was there), once the kernel has let the namespace go.
    deadline = time.monotonic() + 5.0
    while link_exists(net.root_link) and time.monotonic() < deadline:
        time.sleep(0.1)
    if link_exists(net.root_link):
        process.run(["ip", "link", "delete", net.root_link], check=False)
        removed.append(net.root_link)
    return removed


def leftovers(net: ClusterNet) -> list[str]:
    """Return what of the stack's network still exists: namespaces, /etc/netns folders, the root link."""
    found = [ns for ns in net.namespaces() if netns_exists(ns)]
    found += [str(NETNS_ETC / ns) for ns in net.namespaces() if (NETNS_ETC / ns).exists()]
    if link_exists(net.root_link):
        found.append(net.root_link)
    return found
