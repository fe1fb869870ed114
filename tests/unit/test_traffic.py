"""Bytes moving to the cache host, seen on real loopback connections through the kernel's socket table."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from release.build.traffic import CacheTraffic, endpoints


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
