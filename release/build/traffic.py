"""Bytes moving to and from the cache registry: TCP counters of this network namespace's connections to it."""

from __future__ import annotations

import bisect
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass
class Pace:
    """Bytes as progress only while they keep up with `min_rate` bytes per second (0: any byte is progress).

    A crawl is a stall: progress is the moment the bytes moved since the last progress (or since watching began)
    reach `min_rate` times the seconds since then, so a link that moves fewer bytes on average never progresses.
    """

    min_rate: float = 0.0
    since: float | None = None
    banked: int = 0
    kept_at: float | None = None

    def observe(self, now: float, moved: int) -> float | None:
        """Add the bytes moved by `now` (time.monotonic); return when they last kept pace, if ever."""
        if self.since is None:
            self.since = now
        self.banked += max(moved, 0)
        if self.banked > 0 and self.banked >= self.min_rate * (now - self.since):
            self.kept_at, self.since, self.banked = now, now, 0
        return self.kept_at


class CacheTraffic:
    """Watches the TCP connections of this network namespace to the cache registry for bytes moving.

    It sees the engine's own connections when the engine runs in this network namespace (the docker driver
    of a local daemon, as on the local stack); for a builder elsewhere (a docker-container, kubernetes or
    remote builder) it sees nothing, and only BuildKit's own statuses tell progress.
    """

    def __init__(self, registries: Iterable[str], min_rate: float = 0.0) -> None:
        """Watch connections to any of `registries` (`host[:port]`), resolved when first sampled; see Pace."""
        self.registries = list(registries)
        self.targets: set[tuple[str, int]] | None = None
        self.counts: dict[tuple[str, int, str, int], int] | None = None
        self.pace = Pace(min_rate)
        self.min_rate = min_rate
        self.total = 0  # bytes moved since the first sample
        self.history: list[tuple[float, int]] = []  # (time.monotonic, total) of every sample
        self._diag: Any = None
        self.broken = not self.registries

    def too_slow_since(self, began: float) -> bool:
        """Whether bytes sampled since `began` (time.monotonic) moved, but below the minimum rate on average.

        The span starts at the first sample at or after `began`, so bytes before watching began never count. No
        byte at all is not a crawl: it is silence (the statuses judge it), or a builder whose connections are not
        this host's.
        """
        if self.broken or self.min_rate <= 0:
            return False
        first = bisect.bisect_left(self.history, (began,))  # samples are in time order: no scan on each poll
        if first == len(self.history):
            return False
        (first_at, first_total), (last_at, last_total) = self.history[first], self.history[-1]
        moved = last_total - first_total
        # No byte at all is silence, which the deadline judges by statuses: here it may only be a builder out of sight.
        return last_at > first_at and 0 < moved < self.min_rate * (last_at - first_at)

    def moved_at(self) -> float | None:
        """Sample the connections now; return when (time.monotonic) their bytes last kept pace, if ever."""
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
        before, now = self.counts, time.monotonic()
        moved = 0 if before is None else sum(max(n - before.get(key, 0), 0) for key, n in counts.items())
        self.counts = counts
        self.total += moved
        self.history.append((now, self.total))
        return self.pace.observe(now, moved)

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
