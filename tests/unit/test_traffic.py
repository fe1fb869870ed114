"""Bytes moving to the cache host, seen on real loopback connections through the kernel's socket table."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from release.build import traffic
from release.build.traffic import CacheTraffic, Pace, endpoints


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, int]]:
    """A loopback listener standing in for the cache host: it accepts and reads only when told."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener, int(listener.getsockname()[1])
    listener.close()


def test_bytes_sent_to_the_cache_host_count_as_moving_and_a_stalled_upload_does_not(
    server: tuple[socket.socket, int],
) -> None:
    # Bytes the host takes are movement; once it stops reading and its buffers are full, nothing moves.
    listener, port = server
    meter = CacheTraffic([f"127.0.0.1:{port}"])
    client = socket.create_connection(("127.0.0.1", port))
    peer, _ = listener.accept()
    try:
        assert meter.moved_at() is None, "the first sample is only a baseline"
        client.sendall(b"x" * 65536)
        time.sleep(0.05)
        moved = meter.moved_at()
        assert moved is not None
        client.setblocking(False)
        try:  # fill the host's receive buffer and our send buffer: the host reads nothing
            while True:
                client.send(b"x" * 65536)
        except BlockingIOError:
            pass
        stalled, settled, give_up = meter.moved_at(), 0, time.monotonic() + 5
        while settled < 5 and time.monotonic() < give_up:  # the kernel may still squeeze a little into the buffers
            time.sleep(0.1)
            now = meter.moved_at()
            settled = settled + 1 if now == stalled else 0
            stalled = now
        assert settled == 5, "bytes kept moving although the host read nothing"
        reader = threading.Thread(target=peer.recv, args=(1 << 20,))
        reader.start()
        reader.join()
        time.sleep(0.05)
        assert (meter.moved_at() or 0) > (stalled or 0), "the host read again: bytes moved"
    finally:
        client.close()
        peer.close()
        meter.close()


def test_connections_to_other_hosts_do_not_count(server: tuple[socket.socket, int]) -> None:
    # Traffic on another port is not the cache host's: the meter never reports movement for it.
    listener, port = server
    other = socket.create_server(("127.0.0.1", 0))
    meter = CacheTraffic([f"127.0.0.1:{other.getsockname()[1]}"])
    client = socket.create_connection(("127.0.0.1", port))
    peer, _ = listener.accept()
    try:
        meter.moved_at()
        client.sendall(b"x" * 65536)
        peer.recv(65536)
        time.sleep(0.05)
        assert meter.moved_at() is None
    finally:
        client.close()
        peer.close()
        other.close()
        meter.close()


def test_endpoints_resolve_names_and_default_ports() -> None:
    # A registry without a port is reached on 443 or 80; a name is resolved; one that does not resolve is left out.
    assert endpoints(["127.0.0.1:5000"]) == {("127.0.0.1", 5000)}
    assert endpoints(["localhost:5000"]) >= {("127.0.0.1", 5000)}
    assert endpoints(["127.0.0.1"]) == {("127.0.0.1", 443), ("127.0.0.1", 80)}
    assert endpoints(["no-such-host.invalid:5000"]) == set()


def pace_of(min_rate: float, rate: float, seconds: float, step: float = 0.25) -> list[float | None]:
    """Feed a Pace a link moving `rate` bytes/s, sampled every `step` s for `seconds`; the answers in order."""
    pace = Pace(min_rate)
    return [pace.observe(n * step, int(rate * step) if n else 0) for n in range(int(seconds / step) + 1)]


def test_bytes_slower_than_the_minimum_rate_never_count_as_progress() -> None:
    # A 100 KB/s crawl against a 500 KB/s floor: however long it runs, it never kept pace, so the deadline cuts it.
    assert set(pace_of(500_000, 100_000, 600)) == {None}


def test_bytes_at_or_above_the_minimum_rate_are_progress_at_every_sample() -> None:
    # A 5 MB/s link keeps pace at every sample after the first (the baseline).
    answers = pace_of(500_000, 5_000_000, 10)
    assert answers[0] is None and answers[1:] == [n * 0.25 for n in range(1, len(answers))]


def test_a_bursty_link_keeps_pace_when_its_average_reaches_the_minimum() -> None:
    # 2 MB arrive every 2 s and nothing between (1 MB/s on average): progress at each burst, never between.
    pace = Pace(500_000)
    seen = [pace.observe(t / 4, 2_000_000 if t and t % 8 == 0 else 0) for t in range(0, 41)]
    assert seen[8] == 2.0 and seen[15] == 2.0 and seen[16] == 4.0 and seen[40] == 10.0


def test_without_a_minimum_rate_any_byte_is_progress_and_none_is_not() -> None:
    # FRACTALOPS_CACHE_MIN_RATE=0: one byte is progress; a sample with nothing moved is not.
    pace = Pace(0)
    assert pace.observe(0.0, 0) is None
    assert pace.observe(1.0, 1) == 1.0
    assert pace.observe(9.0, 0) == 1.0


class SteadyLink(CacheTraffic):
    """A link to the cache host moving `rate` bytes per second (the kernel's counters stood in for by the clock)."""

    def __init__(self, min_rate: float, rate: float, clock: list[float]) -> None:
        """One connection to 127.0.0.1:1."""
        super().__init__(["127.0.0.1:1"], min_rate)
        self.targets, self.rate, self.clock = {("127.0.0.1", 1)}, rate, clock

    def _sample(self) -> dict[tuple[str, int, str, int], int]:
        return {("127.0.0.1", 40000, "127.0.0.1", 1): int(self.rate * self.clock[0])}


@pytest.mark.parametrize(("rate", "slow"), [(100e3, True), (5e6, False), (499e3, True), (600e3, False), (0, False)])
def test_bytes_since_a_step_began_are_too_slow_only_below_the_minimum_rate(
    monkeypatch: pytest.MonkeyPatch, rate: float, slow: bool
) -> None:
    # Sampled every 0.25 s for 10 s from 1 s on: the average since then, against a 500 KB/s floor. No byte at all is
    # silence (judged by statuses) or a builder out of this host's sight, never a crawl.
    clock = [0.0]
    monkeypatch.setattr(traffic, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    link = SteadyLink(500e3, rate, clock)
    for n in range(4, 45):
        clock[0] = n * 0.25
        link.moved_at()
    assert link.too_slow_since(1.0) is slow
    assert link.too_slow_since(100.0) is False, "nothing sampled since then: no verdict"


def test_without_a_minimum_rate_or_a_byte_signal_nothing_is_too_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    # FRACTALOPS_CACHE_MIN_RATE=0, or a builder whose connections this host cannot see: only statuses judge.
    clock = [0.0]
    monkeypatch.setattr(traffic, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    off, blind = SteadyLink(0, 10.0, clock), CacheTraffic([])
    for n in range(1, 40):
        clock[0] = n * 0.25
        off.moved_at()
        blind.moved_at()
    assert off.too_slow_since(0.0) is False and blind.too_slow_since(0.0) is False


@pytest.mark.parametrize(
    ("driver", "docker_host", "sees"),
    [
        ("docker", None, True),
        ("docker", "unix:///tmp/x/docker.sock", True),
        ("docker", "tcp://10.0.0.5:2376", False),
        ("docker-container", None, False),
        ("remote", None, False),
        ("kubernetes", None, False),
    ],
)
def test_only_a_local_engines_docker_driver_shows_its_cache_traffic_here(
    driver: str, docker_host: str | None, sees: bool
) -> None:
    # A docker-container builder's BuildKit has a network namespace of its own; remote and kubernetes ones run
    # elsewhere, as does an engine reached over TCP: their connections are not in this host's socket table.
    from release.adapters.buildx import Buildx

    engine = Buildx()
    engine._driver = driver
    assert engine.sees_cache_traffic(docker_host) is sees
