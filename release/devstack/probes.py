"""Health probes over loopback TCP and the engine's unix socket (no proxies, short timeouts)."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from release.devstack.ports import HOST

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status (0 when nothing answered), headers and body."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""


def http_request(url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 2.0) -> Reply:
    """Send one HTTP request to a loopback URL and return the reply; never raises for network errors."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout) as resp:
            return Reply(status=resp.status, body=resp.read(), headers=dict(resp.headers.items()))
    except urllib.error.HTTPError as err:
        return Reply(status=err.code, body=err.read(), headers=dict(err.headers.items()))
    except (urllib.error.URLError, OSError) as err:
        return Reply(status=0, error=str(err))


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket."""

    def __init__(self, socket_path: Path, timeout: float) -> None:
        """Remember the socket path; the host name is only for the Host header."""
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(socket_path)

    def connect(self) -> None:
        """Connect to the unix socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


def unix_http_get(socket_path: Path, path: str, timeout: float = 2.0) -> Reply:
    """GET a path over a unix socket (the engine API); never raises for connection errors."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return Reply(status=resp.status, body=resp.read(), headers=dict(resp.getheaders()))
    except OSError as err:
        return Reply(status=0, error=str(err))
    finally:
        conn.close()


def unix_socket_accepts(socket_path: Path, timeout: float = 1.0) -> bool:
    """Return True if something accepts connections on the unix socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def port_listening(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Return True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
