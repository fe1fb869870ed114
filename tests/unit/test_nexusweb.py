"""The nexus web stand-in as a real server on loopback: Nexus's paths, a read-only pypi-group, a static apt-debian."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import waitress

from release.devstack.nexusweb import STATUS_PATH, make_app

WHEEL = "demo_pkg-1.0-py3-none-any.whl"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The web port app over a packages folder with one wheel and one apt index file, on a free loopback port."""
    (tmp_path / "pypi-group").mkdir()
    (tmp_path / "pypi-group" / WHEEL).write_bytes(b"PK\x05\x06" + bytes(18))
    index = tmp_path / "apt-debian" / "dists" / "trixie"
    index.mkdir(parents=True)
    (index / "InRelease").write_text("Origin: Debian\n")
    (tmp_path / "secret.txt").write_text("outside the repository\n")
    (index / "escape").symlink_to(tmp_path / "secret.txt")
    served = waitress.create_server(make_app(tmp_path), listen="127.0.0.1:0", threads=2)
    port = int(served.effective_port)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    yield port, tmp_path
    served.close()
    thread.join(5)


def get(port: int, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to the server; status, headers and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/octet-stream"} if body else {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def test_status_endpoint_and_the_pypi_simple_index_live_under_nexus_paths(server: tuple[int, Path]) -> None:
    # GET /service/rest/v1/status answers 200; pip's simple index of pypi-group links its wheels under the same prefix.
    port, _ = server
    assert get(port, STATUS_PATH)[0] == 200
    status, _, body = get(port, "/repository/pypi-group/simple/demo-pkg/")
    assert status == 200
    assert f'href="/repository/pypi-group/packages/{WHEEL}#sha256=' in body.decode()
    status, _, wheel = get(port, f"/repository/pypi-group/packages/{WHEEL}")
    assert (status, wheel[:4]) == (200, b"PK\x05\x06")


def test_pypi_group_never_sends_pip_to_pypi_org_and_refuses_uploads(server: tuple[int, Path]) -> None:
    # A package that was not seeded is a 404 (no redirect to pypi.org); an upload without credentials is refused.
    port, _ = server
    status, headers, _ = get(port, "/repository/pypi-group/simple/requests/")
    assert status == 404 and "location" not in headers
    status, _, _ = get(port, "/repository/pypi-group/", method="POST", body=b"x")
    assert status in (401, 403)


def test_apt_debian_serves_files_by_get_and_head_and_nothing_outside_its_folder(server: tuple[int, Path]) -> None:
    # Files of the mirror tree come back whole (HEAD gives the length only); a symlink out of it, or a listing, is 404.
    port, _ = server
    assert get(port, "/repository/apt-debian/dists/trixie/InRelease")[::2] == (200, b"Origin: Debian\n")
    status, headers, body = get(port, "/repository/apt-debian/dists/trixie/InRelease", method="HEAD")
    assert (status, headers["content-length"], body) == (200, "15", b"")
    assert get(port, "/repository/apt-debian/dists/trixie/escape")[0] == 404
    assert get(port, "/repository/apt-debian/dists/trixie/")[0] == 404
    assert get(port, "/repository/apt-debian/dists/trixie/InRelease", method="DELETE")[0] == 405


def test_unknown_repositories_are_404_and_a_bare_repository_path_redirects(server: tuple[int, Path]) -> None:
    # /repository/npm-group/ is not served (404); /repository/pypi-group without the slash redirects to it.
    port, _ = server
    assert get(port, "/repository/npm-group/")[0] == 404
    status, headers, _ = get(port, "/repository/pypi-group")
    assert (status, headers["location"]) == (301, "/repository/pypi-group/")
