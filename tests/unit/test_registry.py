"""The registry client: scheme from the topology, docker's credential lookup, bounded retries of 429 and 5xx.

Every test talks real HTTP to a small V2 server on loopback; credential helpers are real executables on PATH.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from release.adapters.registry import RegistryClient, Retry, TaggedImage
from release.build.cache import cache_probe_target
from release.devstack.configs import daemon_config, stack_topology
from release.devstack.paths import StackPaths
from release.devstack.ports import PortLayout
from release.errors import ConfigError, RegistryError
from release.imageref import parse_image_ref
from release.targets import load_targets
from release.topology.buildkitd import daemon_registries, render_buildkitd
from release.topology.load import load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "ops/topology/fractalops.yaml"
REPOSITORY = "fractalops/buildcache"
SECRET = "s3cr3t-Pa55"
TOKEN = "an-access-token"
REFRESH = "a-refresh-token"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class V2Server:
    """A V2 registry on loopback: canned answers per request, optional Basic or Bearer auth, a request log."""

    auth: str = ""  # "", "basic" or "bearer"
    anonymous: bool = False  # the token service grants pull tokens without credentials (a public image)
    username: str = "ci"
    password: str = SECRET
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # answers before the real one
    requests: list[dict[str, Any]] = field(default_factory=list)
    documents: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    host: str = ""

    def add(self, media_type: str, document: dict[str, Any]) -> str:
        """Store a manifest or blob; its digest."""
        data = json.dumps(document).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.documents[digest] = (media_type, data)
        return digest

    def authorized(self, header: str) -> bool:
        """Whether a request carries the credentials this server wants."""
        if self.auth == "basic":
            return header == "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if self.auth == "bearer":
            return header == f"Bearer {TOKEN}"
        return True


def _handler(server: V2Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _token(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode()) if length else {}
            basic = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
            given = self.headers.get("Authorization")
            granted = (self.command == "GET" and (given == basic or (server.anonymous and given is None))) or (
                self.command == "POST" and form.get("refresh_token") == [REFRESH]
            )
            if granted:
                self._send(200, {"Content-Type": "application/json"}, json.dumps({"token": TOKEN}).encode())
            else:
                self._send(401, {})

        def _answer(self) -> None:
            server.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "at": time.monotonic(),
                }
            )
            if self.path.startswith("/token"):
                self._token()
                return
            if server.script:
                status, headers = server.script.pop(0)
                self._send(status, headers)
                return
            if not server.authorized(self.headers.get("Authorization", "")):
                challenge = (
                    'Basic realm="Sonatype Nexus Repository Manager"'
                    if server.auth == "basic"
                    else f'Bearer realm="http://{server.host}/token",service="stub",scope="repository:{REPOSITORY}:pull"'
                )
                self._send(401, {"WWW-Authenticate": challenge})
                return
            if self.path == "/v2/":
                self._send(200, {"Content-Type": "application/json"}, b"{}")
                return
            reference = self.path.rsplit("/", 1)[-1]
            found = server.documents.get(reference)
            if found is None:
                self._send(404, {})
                return
            media_type, data = found
            self._send(200, {"Content-Type": media_type, "Docker-Content-Digest": reference}, data)

        do_GET = do_HEAD = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def v2() -> Iterator[V2Server]:
    """A V2 server on 127.0.0.1 (plain HTTP), stopped after the test."""
    state = V2Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.host = f"127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _image(server: V2Server, labels: dict[str, str]) -> str:
    """An image (manifest + config with labels) stored in the server; its manifest digest."""
    config = server.add("application/vnd.oci.image.config.v1+json", {"config": {"Labels": labels}})
    return server.add(MANIFEST, {"schemaVersion": 2, "mediaType": MANIFEST, "config": {"digest": config}, "layers": []})


def _client(server: V2Server, **options: Any) -> RegistryClient:
    return RegistryClient(server.host, scheme="http", **options)


# --- the scheme comes from the topology -------------------------------------------------------------------------


def test_nexus_connectors_are_plain_http_and_everything_else_https_whatever_the_address() -> None:
    # Both Nexus connectors, by service name and by ClusterIP, are plain HTTP; ghcr.io and unknown hosts HTTPS.
    topo = load_topology(TOPOLOGY)
    ip = topo.registry_cache.host_ip
    for registry in ("nexus.nexus.svc:8082", "nexus.nexus.svc:8083", f"{ip}:8082", f"{ip}:8083"):
        assert topo.registry_scheme(registry) == "http", registry
    for registry in ("ghcr.io", "127.0.0.1:8082", "localhost:5000", "[::1]:5000", "nexus.nexus.svc:8081"):
        assert topo.registry_scheme(registry) == "https", registry
    registry, scheme, _ = cache_probe_target(
        topo, list(load_targets(ROOT / "ops/containers/fractalops/targets.yaml").values()), "main", "clusterip"
    )
    assert (registry, scheme) == (f"{ip}:8082", "http")


def test_the_devstack_says_plain_http_through_its_topology() -> None:
    # The local stack's loopback registries are plain HTTP because its topology says so, not because of 127.0.0.1.
    topo = stack_topology(PortLayout(35080))
    assert topo.release.scheme == "http"
    assert topo.registry_scheme("127.0.0.1:35080") == "http"
    assert topo.registry_scheme("127.0.0.1:35081") == "http"
    assert topo.registry_scheme("127.0.0.1:35082") == "https"  # the upstream is not in the topology


def test_builder_and_engine_configs_mark_exactly_the_plain_http_registries_of_the_topology() -> None:
    # buildkitd.toml (per way in) and daemon.json (every way in) name the registries the client speaks HTTP to.
    topo = load_topology(TOPOLOGY)
    for via in ("service", "clusterip"):
        sections = tomllib.loads(render_buildkitd(topo, via))["registry"]
        marked = {name for name, section in sections.items() if section.get("http")}
        assert marked == set(topo.plain_http_registries(via))
        assert all(topo.registry_scheme(name) == "http" for name in marked)
    engine = daemon_registries(topo)
    assert set(engine["insecure-registries"]) == set(topo.plain_http_registries()) == set(topo.nexus_connectors())
    assert engine["registry-mirrors"] == ["http://nexus.nexus.svc:8083"]


def test_devstack_daemon_json_trusts_its_topology_and_any_topology_it_is_given() -> None:
    # The stack's daemon.json lists its own plain-HTTP registries, plus those of another topology when asked.
    ports = PortLayout(35080)
    paths = StackPaths(Path("/tmp/fx-state"))
    config = daemon_config(paths, ports)
    assert config["registry-mirrors"] == ["http://127.0.0.1:35081"]
    assert set(config["insecure-registries"]) == {"127.0.0.1:35080", "127.0.0.1:35081"}
    production = load_topology(TOPOLOGY)
    trusting = daemon_config(paths, ports, trusted=[production])
    assert set(trusting["insecure-registries"]) == {
        "127.0.0.1:35080",
        "127.0.0.1:35081",
        *production.nexus_connectors(),
    }
    assert trusting["registry-mirrors"] == config["registry-mirrors"]


def test_a_release_registry_on_a_nexus_connector_must_say_plain_http() -> None:
    # image_registry on a plain-HTTP connector with the default (https) scheme is a one-line error naming the field.
    data = YAML(typ="safe").load(TOPOLOGY.read_text())
    data["release"]["image_registry"] = "nexus.nexus.svc:8082"
    with pytest.raises(ConfigError) as caught:
        parse_topology(data, "t.yaml")
    assert str(caught.value).startswith("t.yaml: release.scheme: 'https': ")
    data["release"]["scheme"] = "http"
    assert parse_topology(data, "t.yaml").registry_scheme("nexus.nexus.svc:8082") == "http"


def test_an_https_client_of_a_plain_http_loopback_registry_is_not_switched_to_http(v2: V2Server) -> None:
    # Loopback-ness decides nothing: told HTTPS, the client speaks TLS even to 127.0.0.1 (and the probe says so).
    probe = RegistryClient(v2.host, scheme="https").ping(2.0)
    assert not probe.reachable
    assert v2.requests == []  # the TLS hello is not an HTTP request
    assert RegistryClient(v2.host, scheme="http").ping(2.0).reachable


# --- credentials, the way docker reads them -----------------------------------------------------------------------


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty docker config folder (the client is handed it) and a folder of credential helpers first on PATH."""
    folder = tmp_path / "docker"
    folder.mkdir()
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    monkeypatch.setenv("PATH", f"{helpers}:{os.environ['PATH']}")
    return folder


def _config(folder: Path, document: dict[str, Any]) -> None:
    (folder / "config.json").write_text(json.dumps(document))


def _helper(folder: Path, name: str, script: str) -> Path:
    """A real `docker-credential-<name>` executable in the helpers folder; it logs what it read on stdin."""
    helper = folder.parent / "helpers" / f"docker-credential-{name}"
    helper.write_text(f'#!/bin/sh\n[ "$1" = get ] || exit 3\ncat > "$0.stdin"\n{script}\n')
    helper.chmod(0o755)
    return helper


def test_auths_username_and_password_answer_a_basic_challenge(v2: V2Server, docker_config: Path) -> None:
    # auths.<registry>.username/password (no `auth` field) log in to a Basic-auth registry such as Nexus.
    v2.auth = "basic"
    digest = _image(v2, {})
    _config(docker_config, {"auths": {f"http://{v2.host}": {"username": "ci", "password": SECRET}}})
    ref = parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}")
    assert _client(v2, docker_config=docker_config).manifest_digest(ref) == digest


def test_auths_identity_token_is_exchanged_for_a_bearer_token(v2: V2Server, docker_config: Path) -> None:
    # auths.<registry>.identitytoken is sent as an OAuth refresh token to the realm; the access token opens the registry.
    v2.auth = "bearer"
    digest = _image(v2, {"a": "b"})
    _config(docker_config, {"auths": {v2.host: {"identitytoken": REFRESH}}})
    ref = parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}")
    assert _client(v2, docker_config=docker_config).image_labels(ref) == {"a": "b"}
    assert any(r["method"] == "POST" and r["path"].startswith("/token") for r in v2.requests)


def test_cred_helpers_win_for_their_registry_and_get_the_server_url(v2: V2Server, docker_config: Path) -> None:
    # credHelpers.<registry> runs docker-credential-<helper> get with the registry on stdin; it beats credsStore.
    v2.auth = "bearer"
    digest = _image(v2, {})
    helper = _helper(docker_config, "ci", f'echo \'{{"ServerURL":"x","Username":"ci","Secret":"{SECRET}"}}\'')
    _helper(docker_config, "broken", "exit 1")
    _config(docker_config, {"credsStore": "broken", "credHelpers": {v2.host: "ci"}, "auths": {v2.host: {}}})
    ref = parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}")
    assert _client(v2, docker_config=docker_config).manifest_digest(ref) == digest
    assert Path(f"{helper}.stdin").read_text() == v2.host


def test_creds_store_token_username_means_an_identity_token(v2: V2Server, docker_config: Path) -> None:
    # credsStore answers Username "<token>": the Secret is an identity token, exchanged at the token realm.
    v2.auth = "bearer"
    digest = _image(v2, {})
    _helper(docker_config, "store", f'echo \'{{"Username":"<token>","Secret":"{REFRESH}"}}\'')
    _config(docker_config, {"credsStore": "store"})
    assert (
        _client(v2, docker_config=docker_config).manifest_digest(parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}"))
        == digest
    )


def test_a_helper_without_credentials_for_the_registry_means_anonymous(v2: V2Server, docker_config: Path) -> None:
    # A helper that answers "credentials not found" is no error: the token is asked for anonymously (a public image).
    v2.auth, v2.anonymous = "bearer", True
    digest = _image(v2, {})
    _helper(docker_config, "store", "echo 'credentials not found in native keychain'; exit 1")
    _config(docker_config, {"credsStore": "store"})
    assert (
        _client(v2, docker_config=docker_config).manifest_digest(parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}"))
        == digest
    )
    (token,) = [r for r in v2.requests if r["path"].startswith("/token")]
    assert token["auth"] is None


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (f'echo \'{{"Username":"ci","Secret":"{SECRET}"}}\'; exit 4', "exit status 4: no message"),
        ("echo 'keychain is locked' >&2; exit 1", "exit status 1: keychain is locked"),
        ("echo not-json", "not JSON with Username and Secret"),
    ],
)
def test_a_failing_helper_is_one_line_naming_it_without_the_secret(
    v2: V2Server, docker_config: Path, script: str, reason: str
) -> None:
    # A helper that fails (or answers garbage) is a one-line RegistryError naming helper and registry, never the secret.
    v2.auth = "basic"
    _helper(docker_config, "ci", script)
    _config(docker_config, {"credHelpers": {v2.host: "ci"}})
    with pytest.raises(RegistryError) as caught:
        _client(v2, docker_config=docker_config).manifest_digest(parse_image_ref(f"{v2.host}/{REPOSITORY}:api-main"))
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message
    assert f"{v2.host}: credential helper docker-credential-ci" in message
    assert reason in message


def test_a_missing_helper_is_one_line_naming_it(v2: V2Server, docker_config: Path) -> None:
    # credsStore naming a helper that is not on PATH is a one-line error, as docker's own would be.
    v2.auth = "basic"
    _config(docker_config, {"credsStore": "nowhere"})
    with pytest.raises(RegistryError, match=r"docker-credential-nowhere .*: not found on PATH$"):
        _client(v2, docker_config=docker_config).manifest_digest(parse_image_ref(f"{v2.host}/{REPOSITORY}:api-main"))


def test_credentials_come_only_from_the_folder_the_caller_names(
    v2: V2Server, docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client reads no environment: $DOCKER_CONFIG is the command line's to resolve; None means anonymous.
    v2.auth = "basic"
    digest = _image(v2, {})
    _config(docker_config, {"auths": {v2.host: {"username": "ci", "password": SECRET}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    ref = parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}")
    with pytest.raises(RegistryError, match="HTTP 401"):
        _client(v2).manifest_digest(ref)
    assert _client(v2, docker_config=docker_config).manifest_digest(ref) == digest


# --- retries of 429 and 5xx, bounded --------------------------------------------------------------------------------


def test_probe_retries_a_busy_registry_within_its_budget(v2: V2Server) -> None:
    # The probe retries 503 and 429 (honouring a short Retry-After) and still finishes inside its 2 s budget.
    v2.script = [(503, {}), (429, {"Retry-After": "1"})]
    started = time.monotonic()
    probe = _client(v2).ping(2.0, manifest=(REPOSITORY, "api-main"))
    assert probe.reachable, probe.detail
    assert 1.0 <= time.monotonic() - started < 2.0
    assert [r["path"] for r in v2.requests] == ["/v2/", "/v2/", "/v2/", f"/v2/{REPOSITORY}/manifests/api-main"]


def test_probe_gives_up_on_a_registry_that_stays_unavailable_inside_its_budget(v2: V2Server) -> None:
    # A registry that keeps answering 503 (or asks for a long wait) is unavailable after at most the budget.
    v2.script = [(503, {})] * 50
    started = time.monotonic()
    probe = _client(v2).ping(2.0)
    assert not probe.reachable
    assert "answered HTTP 503 after" in probe.detail
    assert time.monotonic() - started < 2.2
    v2.script = [(503, {"Retry-After": "3600"})] * 50
    started = time.monotonic()
    assert not _client(v2).ping(2.0).reachable
    assert time.monotonic() - started < 0.5


def test_digest_check_honours_retry_after_then_succeeds(v2: V2Server) -> None:
    # The post-push digest check waits as Retry-After says, retries 503 and 429, and gets the digest.
    digest = _image(v2, {})
    v2.script = [(503, {"Retry-After": "1"}), (429, {})]
    ref = parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}")
    assert _client(v2).manifest_digest(ref) == digest
    times = [r["at"] for r in v2.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.95


def test_label_reads_retry_server_errors(v2: V2Server) -> None:
    # Label reads (index/manifest/config) retry a 502 and a 500 on the way.
    digest = _image(v2, {"org.opencontainers.image.revision": "abc"})
    v2.script = [(502, {}), (500, {})]
    labels = _client(v2).image_labels(parse_image_ref(f"{v2.host}/{REPOSITORY}@{digest}"))
    assert labels == {"org.opencontainers.image.revision": "abc"}


def test_retries_are_bounded_in_attempts_and_time(v2: V2Server) -> None:
    # A registry that never recovers is an error after the retry budget: no unbounded wait, no endless loop.
    ref = parse_image_ref(f"{v2.host}/{REPOSITORY}:api-main")
    v2.script = [(500, {})] * 50
    with pytest.raises(RegistryError, match=r"HTTP 500 to a manifest HEAD \(after 4 attempts\)$"):
        _client(v2, retry=Retry(attempts=4, backoff=0.01, max_wait=0.05)).manifest_digest(ref)
    v2.script = [(503, {"Retry-After": "1"})] * 50
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"HTTP 503 to a manifest HEAD \(after \d attempts\)$"):
        _client(v2, timeout=2.5).manifest_digest(ref)  # the call's time budget ends the retries
    assert time.monotonic() - started < 2.5
    v2.script = [(429, {"Retry-After": "3600"})] * 50
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"HTTP 429 to a manifest HEAD$"):
        _client(v2).manifest_digest(ref)  # a wait longer than the longest allowed is not waited for
    assert time.monotonic() - started < 0.5


# --- the image a tag names, for reuse ---------------------------------------------------------------------------


def test_tagged_image_gives_the_digest_of_the_bytes_read_and_the_labels_of_that_image(v2: V2Server) -> None:
    # Through an index whose first entry is an attestation: the image's labels, and the index's own digest.
    image = _image(v2, {"io.fractalops.build.inputs": "f" * 64})
    attestation = _image(v2, {})
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": attestation, "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            {"digest": image, "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
    digest = v2.add("application/vnd.oci.image.index.v1+json", index)
    v2.documents["sha-1234567"] = v2.documents[digest]  # the tag names the index (the stand-in echoes the tag)
    found = _client(v2).tagged_image(parse_image_ref(f"{v2.host}/{REPOSITORY}:sha-1234567"))
    assert found == TaggedImage(digest, {"io.fractalops.build.inputs": "f" * 64}, None)


def test_tagged_image_names_the_platform_its_config_records(v2: V2Server) -> None:
    # os, architecture and variant of the image config: what reuse compares with the builder's platform.
    config = v2.add(
        "application/vnd.oci.image.config.v1+json",
        {"os": "linux", "architecture": "arm", "variant": "v7", "config": {"Labels": {"a": "b"}}},
    )
    image = v2.add(MANIFEST, {"schemaVersion": 2, "mediaType": MANIFEST, "config": {"digest": config}, "layers": []})
    v2.documents["sha-7654321"] = v2.documents[image]
    found = _client(v2).tagged_image(parse_image_ref(f"{v2.host}/{REPOSITORY}:sha-7654321"))
    assert found == TaggedImage(image, {"a": "b"}, "linux/arm/v7")


def test_tagged_image_of_a_tag_the_registry_lacks_is_none(v2: V2Server) -> None:
    assert _client(v2).tagged_image(parse_image_ref(f"{v2.host}/{REPOSITORY}:sha-0000000")) is None


def test_tagged_image_of_a_failing_registry_is_a_registry_error_naming_the_tag(v2: V2Server) -> None:
    v2.script = [(403, {})]
    with pytest.raises(RegistryError, match="sha-1234567: registry answered HTTP 403"):
        _client(v2).tagged_image(parse_image_ref(f"{v2.host}/{REPOSITORY}:sha-1234567"))
