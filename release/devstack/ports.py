"""The loopback port layout of the devstack, derived from one base port."""

from __future__ import annotations

from dataclasses import dataclass

from release.errors import UsageError

PORT_BASE_ENV = "FRACTALOPS_DEVSTACK_PORT_BASE"
DEFAULT_PORT_BASE = 35080
PORT_SPAN = 10
HOST = "127.0.0.1"
# An unusual range, far above the production Nexus connector and NodePort numbers a policy check flags.
MIN_PORT_BASE = 34000
MAX_PORT_BASE = 65535 - PORT_SPAN


@dataclass(frozen=True)
class PortLayout:
    """The ports of one stack: hosted registry, pull-through registry, upstream, and the Nexus web port."""

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
        """Return the Nexus web port: the package repositories (pypi-group, apt-debian) of the nexus web stand-in."""
        return self.base + 3

    def listening(self) -> dict[str, int]:
        """Return the ports the stack listens on, by component name."""
        return {
            "hosted": self.hosted,
            "pull-through": self.pull_through,
            "upstream": self.upstream,
            "nexus-web": self.nexus_web,
        }

    def all_ports(self) -> list[int]:
        """Return every port of the layout."""
        return [self.hosted, self.pull_through, self.upstream, self.nexus_web]


def port_layout(base: int) -> PortLayout:
    """Return the layout for a base port, refusing bases outside the devstack's unusual range."""
    if not MIN_PORT_BASE <= base <= MAX_PORT_BASE:
        raise UsageError(
            f"devstack port base {base} is outside {MIN_PORT_BASE}..{MAX_PORT_BASE}; "
            f"set {PORT_BASE_ENV} to a base in that range"
        )
    return PortLayout(base)
