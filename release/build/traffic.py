"""Bytes moving to and from the cache registry: TCP counters of this network namespace's connections to it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

_INET_DIAG_INFO = 2  # the tcp_info extension of a sock_diag request
_DEFAULT_PORTS = (443, 80)


def endpoints(registries: Iterable[str]) -> set[tuple[str, int]]:
    """The (address, port) pairs `host[:port]` registries resolve to here; a name that does not resolve is left out."""
    found: set[tuple[str, int]] = set()
    for registry in registries:
        host, _, port = registry.rpartition(":") if not registry.endswith("]") else (registry, "", "")
        ports: tuple[int, ...]
        if not host or not port.isdigit():
            host, ports = registry, _DEFAULT_PORTS
        else:
            ports = (int(port),)
        host = host.strip("[]")
        for number in ports:
            try:
                answers = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                continue
            found.update((str(info[4][0]), number) for info in answers)
    return found


class CacheTraffic:
    """Watches the TCP connections of this network namespace to the cache registry for bytes moving.

    It sees the engine's own connections when the engine runs in this network namespace (the docker driver
    of a local daemon, as on the local stack); for a builder elsewhere (a docker-container, kubernetes or
    remote builder) it sees nothing, and only BuildKit's own statuses tell progress.
    """

    def __init__(self, registries: Iterable[str]) -> None:
        """Watch connections to any of `registries` (`host[:port]`), resolved when first sampled."""
        self.registries = list(registries)
        self.targets: set[tuple[str, int]] | None = None
        self.counts: dict[tuple[str, int, str, int], int] | None = None
        self.last_moved: float | None = None
        self._diag: Any = None
        self.broken = not self.registries

    def moved_at(self) -> float | None:
        """Sample the connections now; return when (time.monotonic) bytes last moved on one of them, if ever seen."""
        if self.targets is None and not self.broken:
            self.targets = endpoints(self.registries)  # here, not when the build starts: a slow resolver waits here
            self.broken = not self.targets
        if self.broken:
            return None
        try:
            counts = self._sample()
        except Exception:  # no netlink here (a container without it, another kernel): statuses alone then
            self.broken = True
            self.close()
            return None
        if self.counts is not None and any(moved > self.counts.get(key, 0) for key, moved in counts.items()):
            self.last_moved = time.monotonic()
        self.counts = counts
        return self.last_moved

    def _sample(self) -> dict[tuple[str, int, str, int], int]:
        """Bytes acknowledged plus bytes received, per connection to a target."""
        from pyroute2 import DiagSocket
        from pyroute2.netlink.diag import SS_CONN

        if self._diag is None:
            self._diag = DiagSocket()
            self._diag.bind()
        counts: dict[tuple[str, int, str, int], int] = {}
        targets = self.targets or set()
        for family in {socket.AF_INET6 if ":" in address else socket.AF_INET for address, _ in targets}:
            for message in self._diag.get_sock_stats(
                family=family, states=SS_CONN, extensions=1 << (_INET_DIAG_INFO - 1)
            ):
                peer = (str(message["idiag_dst"]), int(message["idiag_dport"]))
                info = message.get_attr("INET_DIAG_INFO")
                if peer in targets and info is not None:
                    key = (str(message["idiag_src"]), int(message["idiag_sport"]), *peer)
                    counts[key] = int(info["tcpi_bytes_acked"]) + int(info["tcpi_bytes_received"])
        return counts

    def close(self) -> None:
        """Release the netlink socket."""
        if self._diag is not None:
            self._diag.close()
            self._diag = None
