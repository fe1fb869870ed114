"""The cluster's DNS: dnsmasq on the nexus host answers the service names; every host's resolv.conf points at it.

`ip netns exec` puts `/etc/netns/<ns>/hosts` over `/etc/hosts`, which reaches the hosts' own processes but not
the containers of build steps: BuildKit writes their /etc/hosts itself and copies only the host's resolv.conf. A
real name server on the subnet, as cluster DNS is for CI runners, makes the Nexus service name resolve in RUN steps of
the runners' engines and of the shared buildkitd. It knows only the shape's names (no upstream: no outbound traffic).
"""

from __future__ import annotations

import secrets
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

from release.devstack import processes
from release.devstack.cluster.hosts import NETNS_ETC, ClusterNet, Host, in_netns, write_netns_file
from release.devstack.paths import StackPaths

Log = Callable[[str], None]
DNS = "dns"  # the component (pidfile and log) name on the nexus host
DNS_PORT = 53
READY_TIMEOUT = 15.0


def render_config(names: Mapping[str, str], listen: str) -> str:
    """Return dnsmasq's configuration: answer `names` on `listen`:53 only, from nothing but these records."""
    lines = [
        "# Written by `fractalops-release devstack up --shape cluster`: the cluster DNS stand-in.",
        "keep-in-foreground",
        "log-facility=-",
        "pid-file=",
        "no-resolv",
        "no-poll",
        "no-hosts",
        "bind-interfaces",
        f"listen-address={listen}",
        f"port={DNS_PORT}",
    ]
    lines += [f"host-record={name},{address}" for name, address in names.items()]
    return "\n".join(lines) + "\n"


def render_resolv_conf(nameserver: str) -> str:
    """Return a host's resolv.conf: the cluster DNS only."""
    return f"# Written by `fractalops-release devstack up --shape cluster`; removed by `devstack down`.\nnameserver {nameserver}\n"


def write_resolv_files(net: ClusterNet, nameserver: str) -> None:
    """Write /etc/netns/<ns>/resolv.conf for every host (`ip netns exec` puts it over /etc/resolv.conf)."""
    for host in net.hosts():
        write_netns_file(NETNS_ETC / host.namespace, "resolv.conf", render_resolv_conf(nameserver))


def config_file(folder: StackPaths) -> Path:
    """Return dnsmasq's configuration file on the nexus host."""
    return folder.config_file("dnsmasq.conf")


def query(name: str, qid: int) -> bytes:
    """Return a DNS query packet for the A record of `name` (recursion desired)."""
    labels = b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def answer_address(reply: bytes, qid: int) -> str | None:
    """Return the first A record of a reply to query `qid` (None for another id, an error code or no answer)."""
    try:
        rid, flags, _, ancount = struct.unpack("!HHHH", reply[:8])
        if rid != qid or flags & 0x000F or not ancount:
            return None
        offset = _skip_name(reply, 12) + 4  # the question: its name, type and class
        for _ in range(ancount):
            offset = _skip_name(reply, offset)
            rtype, _, _, length = struct.unpack("!HHIH", reply[offset : offset + 10])
            offset += 10
            if rtype == 1 and length == 4:
                return socket.inet_ntoa(reply[offset : offset + 4])
            offset += length
    except (struct.error, IndexError, OSError):
        return None
    return None


def _skip_name(reply: bytes, offset: int) -> int:
    """Return the offset after a name at `offset`: its labels and the final zero, or up to a compression pointer."""
    while reply[offset] != 0:
        if reply[offset] & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + reply[offset]
    return offset + 1


def lookup(server: str, name: str, timeout: float = 1.0) -> str | None:
    """Ask the name server at `server`:53 for the A record of `name`; None when it does not answer one."""
    qid = secrets.randbelow(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query(name, qid), (server, DNS_PORT))
            return answer_address(sock.recv(512), qid)
        except OSError:
            return None


def start(folder: StackPaths, host: Host, names: Mapping[str, str], engine_path: str, log: Log) -> bool:
    """Start dnsmasq inside the nexus host unless it runs (restarted when its records changed); return whether it started."""
    from release.devstack.stack import wait_answering, write_if_changed

    changed = write_if_changed(config_file(folder), render_config(names, host.address))
    tracked = processes.running(folder, DNS)
    if tracked is not None and changed:
        log("devstack: restarting the cluster DNS (its records changed)")
        processes.stop(folder, DNS)
        tracked = None
    if tracked is not None:
        return False
    log(f"devstack: starting the cluster DNS (dnsmasq) on {host.address}:{DNS_PORT}")
    argv = in_netns(host.namespace, ["dnsmasq", f"--conf-file={config_file(folder)}"])
    processes.start(folder, DNS, argv, env={"PATH": engine_path})
    name, address = next(iter(names.items()))
    wait_answering(folder, [DNS], lambda _: lookup(host.address, name, timeout=0.5) == address, READY_TIMEOUT)
    return True


def stop(folder: StackPaths, log: Log) -> int | None:
    """Stop the cluster DNS; return its pid if it ran."""
    pid = processes.stop(folder, DNS)
    if pid is not None:
        log(f"devstack: stopped the cluster DNS (pid {pid})")
    return pid
