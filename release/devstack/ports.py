"""The loopback port layout of the devstack, derived from one base port."""

from __future__ import annotations

import os
from dataclasses import dataclass

from release.errors import UsageError

PORT_BASE_ENV = "FRACTALOPS_DEVSTACK_PORT_BASE"
DEFAULT_PORT_BASE = 35080
PORT_SPAN = 10
HOST = "127.0.0.1"
# Ports a policy check flags (Nexus defaults of the production cluster); never use them here.
FORBIDDEN_PORTS = frozenset({8081, 8082, 8083, 30083})


@dataclass(frozen=True)
class PortLayout:
    """The ports of one stack: hosted registry, pull-through registry, upstream, and a Nexus web port."""

    base: int

    @property
    def hosted(self) -> int:
        """Return the hosted registry port (plays Nexus docker-internal: images and build cache)."""
        return self.base

    @property
    def pull_through(self) -> int:
        """Return the pull-through registry port (plays Nexus docker-group, the docker.io mirror)."""
        return self.base + 1

    @property
    def upstream(self) -> int:
        """Return the upstream registry port (plays Docker Hub, seeded offline)."""
        return self.base + 2

    @property
    def nexus_web(self) -> int:
        """Return the port named as Nexus web port in the topology; nothing listens on it."""
        return self.base + 3

    def listening(self) -> dict[str, int]:
        """Return the ports the stack listens on, by component name."""
        return {"hosted": self.hosted, "pull-through": self.pull_through, "upstream": self.upstream}

    def all_ports(self) -> list[int]:
        """Return every port of the layout."""
        return [self.hosted, self.pull_through, self.upstream, self.nexus_web]


def port_layout(base: int) -> PortLayout:
    """Return the layout for a base port, refusing bases that leave the range or hit flagged ports."""
    if not 1024 <= base <= 65535 - PORT_SPAN:
        raise UsageError(f"devstack port base {base} is out of range 1024..{65535 - PORT_SPAN}")
    layout = PortLayout(base)
    clash = sorted(FORBIDDEN_PORTS.intersection(layout.all_ports()))
    if clash:
        raise UsageError(f"devstack port base {base} would use flagged port(s) {clash}; pick another base")
    return layout


def port_layout_from_env(environ: dict[str, str] | None = None) -> PortLayout:
    """Return the layout from $FRACTALOPS_DEVSTACK_PORT_BASE, or the default base."""
    env = os.environ if environ is None else environ
    raw = env.get(PORT_BASE_ENV, "").strip()
    if not raw:
        return port_layout(DEFAULT_PORT_BASE)
    try:
        base = int(raw)
    except ValueError as err:
        raise UsageError(f"{PORT_BASE_ENV}={raw!r} is not a port number") from err
    return port_layout(base)
