"""A standalone buildkitd built from Debian's Go sources, reached by buildx's remote driver over mutual TLS."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from release.adapters import process
from release.buildersetup import RemoteTLS, Runner, create_builder, plan_builder, run_docker
from release.devstack.buildkit import BuildkitBinaries, ensure_buildkit
from release.devstack.buildkit_daemon import RunningBuildkitd, buildctl_argv, start_buildkitd, stop_buildkitd
from release.devstack.seed import manifest_digest
from release.errors import EngineError
from release.topology.load import load_topology

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = [pytest.mark.devstack, pytest.mark.slow]

SERVER_NAME = "buildkit.fractalops.svc"


def log(message: str) -> None:
    """Show progress on stderr (visible with -s)."""
    import sys

    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """Return a loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def binaries(devstack: Devstack) -> BuildkitBinaries:
    """buildkitd and buildctl for this stack: built once per machine (~5 min on 2 cores), then copied."""
    return ensure_buildkit(devstack.paths.root / "buildkit", log)


@pytest.fixture(scope="module")
def buildkitd(devstack: Devstack, binaries: BuildkitBinaries) -> Iterator[RunningBuildkitd]:
    """A buildkitd on 127.0.0.1 (a free port) with mutual TLS and the stack topology's buildkitd.toml."""
    folder = devstack.paths.root / "buildkitd-test"
    stop_buildkitd(folder)  # a run killed before its teardown may have left one
    running = start_buildkitd(
        folder,
        binaries,
        load_topology(devstack.topology),
        host="127.0.0.1",
        port=free_port(),
        server_names=[SERVER_NAME, "127.0.0.1"],
        log=log,
    )
    try:
        yield running
    finally:
        stop_buildkitd(folder)


@pytest.fixture
def builder_name(devstack: Devstack) -> Iterator[str]:
    """A fresh buildx builder name; the builder is removed afterwards."""
    name = f"fx-remote-{uuid.uuid4().hex[:8]}"
    yield name
    devstack.docker(["buildx", "rm", name])


def stack_docker(devstack: Devstack) -> Runner:
    """A runner for `create_builder` that uses the stack's own docker client."""
    return lambda argv: run_docker([devstack.docker_bin, *argv[1:]])


def test_second_ensure_is_instant(devstack: Devstack, binaries: BuildkitBinaries) -> None:
    # The first call built (or copied) the binaries; asking again reads the stack's marker and builds nothing.
    started = time.monotonic()
    again = ensure_buildkit(devstack.paths.root / "buildkit", log)
    assert time.monotonic() - started < 2.0
    assert again == binaries
    info = binaries.info()
    assert info["source"]["package"] == "golang-github-docker-docker-dev"
    version = process.run([str(binaries.buildkitd), "--version"]).stdout
    assert "v0.13" in version, version


def test_remote_builder_with_client_certs_builds_and_pushes(
    devstack: Devstack, buildkitd: RunningBuildkitd, builder_name: str, tmp_path: Path
) -> None:
    # buildx's remote driver with the client certs runs a RUN step on buildkitd and pushes to the hosted registry.
    topology = load_topology(devstack.topology)
    client = buildkitd.client
    tls = RemoteTLS(client.ca_cert, client.cert, client.key, SERVER_NAME)
    plan = plan_builder(topology, builder_name, "remote", endpoint=buildkitd.address, tls=tls)
    create_builder(plan, run=stack_docker(devstack))
    inspect = devstack.docker(["buildx", "inspect", builder_name])
    assert re.search(r"^Driver:\s+remote$", inspect.stdout, re.M), inspect.stdout + inspect.stderr
    assert re.search(r"^Status:\s+running$", inspect.stdout, re.M), inspect.stdout

    nonce = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox:1.36\nRUN echo 'built on the shared builder {nonce}' > /built.txt && cat /built.txt\n"
    )
    repository, tag = "fx-buildkit-test/remote", nonce[:12]
    metadata = tmp_path / "metadata.json"
    result = devstack.docker(
        ["buildx", "build", "--builder", builder_name, "--progress", "plain", "--push",
         "-t", f"{devstack.hosted}/{repository}:{tag}", "--metadata-file", str(metadata), str(tmp_path)],
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"built on the shared builder {nonce}" in result.stderr  # the RUN step ran, it was not cached
    digest = json.loads(metadata.read_text())["containerimage.digest"]
    assert manifest_digest(devstack.ports.hosted, repository, tag) == digest
    # The build ran on this buildkitd: its cache now holds records.
    du = process.run(buildctl_argv(buildkitd.buildctl, buildkitd.address, client, SERVER_NAME, "du"), timeout=30).stdout
    assert "Total:" in du and len(du.splitlines()) > 2, du


def test_client_without_certificate_is_refused(
    devstack: Devstack, buildkitd: RunningBuildkitd, builder_name: str
) -> None:
    # Mutual TLS is really on: the CA alone (no client certificate) gets no answer from buildctl or buildx.
    client = buildkitd.client
    ok = process.run(
        buildctl_argv(buildkitd.buildctl, buildkitd.address, client, SERVER_NAME, "debug", "workers"), check=False
    )
    assert ok.returncode == 0, ok.stderr
    refused = process.run(
        buildctl_argv(
            buildkitd.buildctl, buildkitd.address, None, SERVER_NAME, "debug", "workers", ca_cert=client.ca_cert
        ),
        check=False,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "workers" in refused.stderr or "Unavailable" in refused.stderr, refused.stderr
    # At the TLS layer: the server trusts our CA-verified handshake but ends it for want of a client certificate.
    host, port = buildkitd.address.removeprefix("tcp://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(client.ca_cert))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls_socket,
    ):
        tls_socket.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            tls_socket.recv(1)

    topology = load_topology(devstack.topology)
    plan = plan_builder(
        topology,
        builder_name,
        "remote",
        endpoint=buildkitd.address,
        tls=RemoteTLS(client.ca_cert, None, None, SERVER_NAME),
    )
    with pytest.raises(EngineError):
        create_builder(plan, run=stack_docker(devstack))
