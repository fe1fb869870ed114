"""Stand-ins: a cache registry that hangs on demand (used by tests and bench), a targets file built from another context."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def targets_with_context(folder: Path, context: str) -> Path:
    """A copy of the targets file whose targets all build from `context` (written into `folder`)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    data = yaml.load((ROOT / "ops/containers/fractalops/targets.yaml").read_text())
    for target in data["targets"].values():
        target["context"] = context
    path = folder / "targets.yaml"
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


class HangingRegistry:
    """A stand-in for a cache registry that answers the /v2/ ping (and, with `answer_manifests`, manifest
    requests with 404) and never answers anything else; with `reject_writes` it answers everything at once,
    reads with 404 and writes with 403.

    It speaks plain HTTP like a Nexus connector: a TLS hello gets an HTTP 400 (so clients fall back to HTTP).
    """

    PING = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    NOT_TLS = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    FORBIDDEN = (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )

    def __init__(self, answer_manifests: bool = False, reject_writes: bool = False) -> None:
        self.answer_manifests = answer_manifests or reject_writes
        # Like a Nexus repository that is read-only: every read is a miss (404), every write is refused (403).
        self.reject_writes = reject_writes
        self.release_all = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []

    def serve(self) -> None:
        while not self.release_all.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            head = conn.recv(4096)
        except OSError:
            conn.close()
            return
        if head.startswith(b"\x16"):
            conn.sendall(self.NOT_TLS)
            conn.close()
        elif head.split(b" ")[1:2] in ([b"/v2/"], [b"/v2"]):
            conn.sendall(self.PING)
            conn.close()
        elif self.answer_manifests and b"/manifests/" in head.split(b"\r\n", 1)[0]:
            conn.sendall(self.NOT_FOUND)
            conn.close()
        elif self.reject_writes:
            request_line = head.split(b"\r\n", 1)[0]
            conn.sendall(self.NOT_FOUND if request_line.startswith((b"HEAD", b"GET")) else self.FORBIDDEN)
            conn.close()
        else:
            self.held.append(conn)  # never answered, never closed until teardown
            self.release_all.wait(300)
            conn.close()

    def start(self) -> HangingRegistry:
        """Serve on a daemon thread."""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        """Let every held connection go and stop serving."""
        self.release_all.set()
        self.thread.join()
        self.sock.close()
