"""The nexus host's web port (the topology's `web_port`): `/repository/pypi-group/` and `/repository/apt-debian/`.

The same stand-in the loopback stack runs (`release.devstack.nexusweb`: pypiserver and Debian's signed mirror
subset), serving the packages `up` seeded once on the machine into the state folder, on the nexus host's address.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from release.devstack import processes
from release.devstack.cluster.hosts import Host, in_netns
from release.devstack.nexusweb import STATUS_PATH
from release.devstack.packages import Seed
from release.devstack.paths import StackPaths
from release.devstack.probes import http_request
from release.topology.model import Topology

Log = Callable[[str], None]
NEXUS_WEB = "nexus-web"
READY_TIMEOUT = 30.0
# The `release` package this process runs, so the stand-in is the same code (a checkout needs no install).
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def endpoint(topology: Topology, host: Host) -> str:
    """Return `address:port` of the web port on the nexus host."""
    return f"{host.address}:{topology.nexus.web_port}"


def argv(topology: Topology, host: Host, packages: Path) -> list[str]:
    """Return the command line of the web port inside the nexus namespace."""
    serve: list[str | Path] = [
        sys.executable,
        "-m",
        "release.devstack.nexusweb",
        "--listen",
        endpoint(topology, host),
        "--root",
        packages,
    ]
    return in_netns(host.namespace, serve)


def answers(topology: Topology, host: Host) -> bool:
    """Return whether the web port answers Nexus's status endpoint (asked from the root namespace)."""
    return http_request(f"http://{endpoint(topology, host)}{STATUS_PATH}").status == 200


def start(folder: StackPaths, topology: Topology, host: Host, seed: Seed, engine_path: str, log: Log) -> bool:
    """Start the web port unless it runs (restarted when the packages were seeded again); return whether it started."""
    from release.devstack.stack import wait_answering

    tracked = processes.running(folder, NEXUS_WEB)
    if tracked is not None and seed.changed:
        log("devstack: restarting the nexus web port (the packages were seeded again)")
        processes.stop(folder, NEXUS_WEB)
        tracked = None
    if tracked is not None:
        return False
    log(f"devstack: starting the nexus web port on {endpoint(topology, host)} (pypi-group, apt-debian)")
    env = {"PATH": engine_path, "PYTHONPATH": str(PACKAGE_ROOT)}
    processes.start(folder, NEXUS_WEB, argv(topology, host, seed.root), env=env)
    wait_answering(folder, [NEXUS_WEB], lambda _: answers(topology, host), READY_TIMEOUT)
    return True


def stop(folder: StackPaths, log: Log) -> int | None:
    """Stop the web port; return its pid if it ran."""
    pid = processes.stop(folder, NEXUS_WEB)
    if pid is not None:
        log(f"devstack: stopped the nexus web port (pid {pid})")
    return pid
