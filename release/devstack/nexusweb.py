"""The "nexus web" stand-in: Nexus's web port serving `/repository/pypi-group/` (pypiserver) and `/repository/apt-debian/`.

Run as its own process (`python -m release.devstack.nexusweb --listen HOST:PORT … --root DIR`) by `devstack up`.
The PyPI repository is a real pypiserver (read-only, no fallback to pypi.org); the apt repository is the static
tree of a Debian mirror (Debian's signed InRelease and Packages index, the pool holding the seeded packages),
served as Nexus's apt proxy serves it. `GET /service/rest/v1/status` answers 200 like Nexus's status endpoint.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from wsgiref.util import FileWrapper

PYPI_REPOSITORY = "pypi-group"
APT_REPOSITORY = "apt-debian"
REPOSITORY_PREFIX = "/repository/"
STATUS_PATH = "/service/rest/v1/status"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _plain(start_response: StartResponse, status: str, text: str = "") -> list[bytes]:
    """Answer with a short text body."""
    body = (text or status).encode() + b"\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def static_files(root: Path) -> WSGIApp:
    """Return a WSGI app serving the files under `root` (GET and HEAD; no listings, nothing outside `root`)."""
    base = root.resolve()

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed")
        relative = str(environ.get("PATH_INFO", "")).lstrip("/")
        target = (base / relative).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            return _plain(start_response, "404 Not Found")
        size = target.stat().st_size
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(size))])
        if method == "HEAD":
            return []
        wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        return wrapper(target.open("rb"), 1 << 16)  # type: ignore[no-any-return]

    return serve


def nexus_app(repositories: dict[str, WSGIApp]) -> WSGIApp:
    """Return the web port's app: each repository under `/repository/<name>/`, and Nexus's status endpoint."""

    def dispatch(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path == STATUS_PATH:
            return _plain(start_response, "200 OK", "ok")
        if path.startswith(REPOSITORY_PREFIX):
            name, slash, rest = path[len(REPOSITORY_PREFIX) :].partition("/")
            app = repositories.get(name)
            if app is not None:
                if not slash:
                    location = f"{environ.get('SCRIPT_NAME', '')}{REPOSITORY_PREFIX}{name}/"
                    start_response("301 Moved Permanently", [("Location", location), ("Content-Length", "0")])
                    return []
                inner = dict(environ)
                inner["SCRIPT_NAME"] = f"{environ.get('SCRIPT_NAME', '')}{REPOSITORY_PREFIX}{name}"
                inner["PATH_INFO"] = f"/{rest}"
                return app(inner, start_response)
        return _plain(start_response, "404 Not Found", f"no repository at {path}")

    return dispatch


def pypi_app(root: Path) -> WSGIApp:
    """Return a read-only pypiserver over the wheels in `root`, never redirecting a miss to pypi.org."""
    import pypiserver

    app: WSGIApp = pypiserver.app(
        roots=[root.resolve()],
        disable_fallback=True,
        authenticate=["update"],
        password_file=None,
        overwrite=False,
    )
    return app


def make_app(root: Path) -> WSGIApp:
    """Return the whole web port for a packages folder holding `pypi-group/` and `apt-debian/`."""
    return nexus_app(
        {
            PYPI_REPOSITORY: pypi_app(root / PYPI_REPOSITORY),
            APT_REPOSITORY: static_files(root / APT_REPOSITORY),
        }
    )


def parse_listen(value: str) -> str:
    """Check one `HOST:PORT` listen address."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--listen {value!r} is not HOST:PORT")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the web port on every `--listen` address until terminated."""
    parser = argparse.ArgumentParser(prog="python -m release.devstack.nexusweb", description=__doc__)
    parser.add_argument("--listen", action="append", type=parse_listen, required=True, help="HOST:PORT (repeatable)")
    parser.add_argument("--root", type=Path, required=True, help="folder holding pypi-group/ and apt-debian/")
    args = parser.parse_args(argv)
    for name in (PYPI_REPOSITORY, APT_REPOSITORY):
        if not (args.root / name).is_dir():
            print(f"error: nexusweb: {args.root / name} is not a folder; run `devstack up` to seed it", file=sys.stderr)
            return 2
    import waitress

    print(f"nexusweb: serving {args.root} on {' '.join(args.listen)}", file=sys.stderr, flush=True)
    waitress.serve(make_app(args.root), listen=" ".join(args.listen), threads=8, ident="nexus-standin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
