"""A TCP proxy on 127.0.0.1 in front of a registry: throttles uploads, or goes silent after so many bytes."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

CHUNK = 64 * 1024


class LoopbackProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`.

    `rate` caps the bytes per second sent upstream (all connections together). With `silent_after`, once
    that many bytes went upstream the proxy goes silent: it reads nothing more and forwards nothing either
    way, so the kernel buffers fill and the client's uploads stop, but every connection stays open (a host
    that stops answering mid-upload). `close()` closes every connection.
    """

    def __init__(self, upstream_port: int, rate: float | None = None, silent_after: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.silent_after = silent_after
        self.sent_upstream = 0
        self.silent = threading.Event()
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.next_send = time.monotonic()
        self.connections: list[socket.socket] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> LoopbackProxy:
        """Serve on a daemon thread."""
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close every connection, held or not."""
        self.closing.set()
        self.thread.join()
        self.sock.close()
        with self.lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _limit(self) -> int:
        """How many bytes the next upstream read may take (0 once the silent point is reached)."""
        with self.lock:
            if self.silent_after is None:
                return CHUNK
            left = min(CHUNK, self.silent_after - self.sent_upstream)
            if left <= 0:
                self.silent.set()
            return max(left, 0)

    def _account(self, size: int) -> None:
        """Count `size` bytes sent upstream and wait as long as the rate limit asks."""
        with self.lock:
            self.sent_upstream += size
            if self.rate is None:
                return
            start = max(self.next_send, time.monotonic())
            self.next_send = start + size / self.rate
        time.sleep(max(0.0, start - time.monotonic()))

    def _pump(self, source: socket.socket, sink: socket.socket, upload: bool) -> None:
        try:
            while not self.closing.is_set():
                limit = self._limit() if upload else CHUNK
                if self.silent.is_set() or limit == 0:
                    self.closing.wait()  # silent: read nothing, forward nothing, hold the connection
                    return
                data = source.recv(limit)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                if upload:
                    self._account(len(data))
                elif self.silent.is_set():
                    self.closing.wait()
                    return
                sink.sendall(data)
        except OSError:
            return
