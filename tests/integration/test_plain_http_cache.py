"""The Nexus build cache as production has it: a plain-HTTP registry on a non-loopback address.

A real `docker-registry` listens inside a network namespace this module creates (a veth pair, a private /30
the test owns); the engine trusts it through the daemon.json rendered from the test's topology.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from ruamel.yaml import YAML

from release.adapters.registry import RegistryClient
from release.build.cache import CacheCheck, cache_scope, probe_cache
from release.devstack import processes
from release.devstack.configs import render_daemon_config
from release.devstack.install import read_marker
from release.imageref import ImageRef, parse_pinned_ref
from release.targets import load_targets
from release.topology.load import load_topology

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack

ROOT = Path(__file__).resolve().parents[2]
RELEASE_SH = ROOT / "ops/containers/fractalops/release.sh"
CONNECTOR_PORT = 5000  # the docker-internal connector inside the namespace (Nexus uses 8082)
GROUP_PORT = 5001  # the docker-group connector (nothing listens: the engine mirrors docker.io elsewhere)


@dataclass(frozen=True)
class NamespacedRegistry:
    """A registry in a network namespace of the test's own, reached from the root namespace at `address`."""

    namespace: str
    address: str
    log: Path

    @property
    def endpoint(self) -> str:
        """`address:port` of the registry (the Nexus docker-internal connector of the test topology)."""
        return f"{self.address}:{CONNECTOR_PORT}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _remove_network(namespace: str, host_end: str) -> None:
    """Delete the namespace (its veth end goes with it) and the host end, if either is left."""
    _ip("netns", "delete", namespace, check=False)
    _ip("link", "delete", host_end, check=False)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def namespaced_registry(devstack: Devstack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespacedRegistry]:
    """A real docker-registry serving plain HTTP on 10.250.N.2 inside a namespace; all of it removed afterwards."""
    binaries = read_marker(devstack.paths)
    assert binaries is not None, "the devstack is up, so its install marker names the registry binary"
    octet = (devstack.ports.base // 10) % 256  # one /30 per stack's port base, as the stack's own bridge does
    host_address, address = f"10.250.{octet}.1", f"10.250.{octet}.2"
    namespace, host_end, inner_end = (
        f"fxc{devstack.ports.base}",
        f"fxc{devstack.ports.base}h",
        f"fxc{devstack.ports.base}n",
    )
    folder = tmp_path_factory.mktemp("netns-registry")
    config = folder / "registry.yml"
    config.write_text(
        json.dumps(  # JSON is YAML: the distribution config, storage in the test's folder
            {
                "version": 0.1,
                "log": {"level": "info", "formatter": "text"},
                "storage": {"filesystem": {"rootdirectory": str(folder / "data")}, "delete": {"enabled": True}},
                "http": {"addr": f"{address}:{CONNECTOR_PORT}"},
            }
        )
    )
    _remove_network(namespace, host_end)  # what a killed earlier run of this stack may have left
    server: subprocess.Popen[bytes] | None = None
    log = folder / "registry.log"
    try:
        _ip("netns", "add", namespace)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", inner_end)
        _ip("link", "set", inner_end, "netns", namespace)
        _ip("addr", "add", f"{host_address}/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", inner_end)
        _ip("-n", namespace, "link", "set", inner_end, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        with log.open("wb") as sink:
            # `ip netns exec` execs the registry itself: this pid is the registry's.
            server = subprocess.Popen(
                ["ip", "netns", "exec", namespace, binaries.registry, "serve", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while not _answers(f"http://{address}:{CONNECTOR_PORT}/v2/"):
            assert server.poll() is None, f"the registry exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"the registry did not answer: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        yield NamespacedRegistry(namespace, address, log)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        _remove_network(namespace, host_end)


def _topology(devstack: Devstack, registry: NamespacedRegistry, folder: Path) -> Path:
    """The production shape: Nexus reached by service name (unresolvable here) or ClusterIP = the namespace address."""
    yaml = YAML()
    data = yaml.load(devstack.topology.read_text())
    del data["nexus"]["host"]  # nexus.nexus.svc, as in production
    data["nexus"]["docker_internal_port"] = CONNECTOR_PORT
    data["nexus"]["docker_group_port"] = GROUP_PORT
    data["registry_cache"]["host_ip"] = registry.address
    data["registry_cache"]["docker_proxy_port"] = GROUP_PORT
    data["registry_cache"]["ghcr_proxy_port"] = GROUP_PORT
    data["registry_cache"]["buildcache_ref"] = f"{registry.endpoint}/fractalops/buildcache"
    # Release images go to the same plain-HTTP connector, so the post-push check talks to it as well.
    data["release"]["image_registry"] = registry.endpoint
    data["release"]["scheme"] = "http"
    path = folder / "topology-netns.yaml"
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


@pytest.fixture(scope="module")
def netns_topology(
    devstack: Devstack, namespaced_registry: NamespacedRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The test's topology file naming the namespaced registry as both Nexus docker connectors' host."""
    return _topology(devstack, namespaced_registry, tmp_path_factory.mktemp("netns-topology"))


def _insecure_registries(devstack: Devstack) -> dict[str, Any]:
    shown = devstack.docker(["info", "--format", "{{json .RegistryConfig.IndexConfigs}}"])
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def _reload_engine(devstack: Devstack, text: str, wanted: str, present: bool) -> None:
    """Write daemon.json, SIGHUP the engine (it re-reads insecure-registries) and wait until it shows the change."""
    path = devstack.paths.config_file("daemon.json")
    staged = path.with_suffix(".json.staged")
    staged.write_text(text)
    staged.replace(path)
    engine = processes.running(devstack.paths, "dockerd")
    assert engine is not None, "the devstack engine runs"
    os.kill(engine.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while (wanted in _insecure_registries(devstack)) != present:
        assert time.monotonic() < deadline, f"the engine did not reload {path}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def trusting_engine(
    devstack: Devstack, netns_topology: Path, namespaced_registry: NamespacedRegistry
) -> Iterator[None]:
    """The devstack engine with daemon.json rendered from its own topology plus the test's; put back afterwards."""
    path = devstack.paths.config_file("daemon.json")
    original = path.read_text()
    trusting = render_daemon_config(devstack.paths, devstack.ports, trusted=[load_topology(netns_topology)])
    assert namespaced_registry.endpoint in json.loads(trusting)["insecure-registries"]
    try:
        _reload_engine(devstack, trusting, namespaced_registry.endpoint, present=True)
        config = _insecure_registries(devstack)[namespaced_registry.endpoint]
        assert config["Secure"] is False
        yield
    finally:
        _reload_engine(devstack, original, namespaced_registry.endpoint, present=False)


def _release(
    devstack: Devstack, tmp_path: Path, topology: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """release.sh as a person runs it outside CI, with the stack's engine, this topology and a private events file."""
    full = {
        k: v for k, v in os.environ.items() if k not in {"CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"}
    }
    full.update(devstack.env)
    full.update(
        {
            "FRACTALOPS_TOPOLOGY": str(topology),
            "FRACTALOPS_BUILD_EVENTS_FILE": str(tmp_path / "events.jsonl"),
            "FRACTALOPS_EVENTS_DIR": str(tmp_path / "records"),
            "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1",
            "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS": "0",
        }
    )
    full.update(env)
    return subprocess.run([str(RELEASE_SH), *args], env=full, capture_output=True, text=True, timeout=600, check=False)


def _clone_with_remote(tmp_path: Path) -> Path:
    """A clone of this repository's HEAD whose `origin` is a bare remote of its own (what promote checks)."""
    remote, clone = tmp_path / "remote.git", tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(remote)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    subprocess.run(["git", "--git-dir", str(remote), "update-ref", "refs/heads/main", head.strip()], check=True)
    subprocess.run(["git", "--git-dir", str(remote), "symbolic-ref", "HEAD", "refs/heads/main"], check=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    return clone


def _events(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("via", ["service", "clusterip"])
def test_cache_probe_answers_over_plain_http_on_a_non_loopback_address(
    devstack: Devstack, netns_topology: Path, namespaced_registry: NamespacedRegistry, via: str
) -> None:
    # The pre-build probe reaches a plain-HTTP connector at a non-loopback address and finds the cache usable.
    topology = load_topology(netns_topology)
    targets = list(load_targets(ROOT / "ops/containers/fractalops/targets.yaml").values())
    started = time.monotonic()
    assert probe_cache(topology, targets, "main", via, use_cache=True) == CacheCheck()
    assert time.monotonic() - started < 2.0
    assert topology.registry_scheme(namespaced_registry.endpoint) == "http"


@pytest.mark.slow
def test_release_imports_the_build_cache_from_a_plain_http_registry_on_a_non_loopback_address(
    devstack: Devstack,
    netns_topology: Path,
    namespaced_registry: NamespacedRegistry,
    trusting_engine: None,
    tmp_path: Path,
) -> None:
    # Against a plain-HTTP Nexus connector off loopback the release keeps its cache flags and imports a hit.
    scope = f"itest-{uuid.uuid4().hex[:8]}"
    first = _release(devstack, tmp_path, netns_topology, "--target", "api", FRACTALOPS_CACHE_BRANCH=scope)
    assert "build cache unavailable" not in first.stderr, first.stderr[-3000:]
    assert first.returncode == 0, first.stderr[-3000:]
    assert [(e["cache_import"], e["cache_export"]) for e in _events(tmp_path)] == [("miss", "ok")]
    # The cache manifest is in the namespaced registry, as an OCI image manifest (image-manifest=true).
    client = RegistryClient.for_topology(load_topology(netns_topology), namespaced_registry.endpoint)
    cache_tag = ImageRef(namespaced_registry.endpoint, "fractalops/buildcache", f"api-{cache_scope(scope)}", None)
    assert client.manifest_digest(cache_tag) is not None
    (first_ref,) = [line.removeprefix("image_ref=") for line in first.stdout.splitlines()]
    assert parse_pinned_ref(first_ref).registry == namespaced_registry.endpoint

    prune = devstack.docker(["buildx", "prune", "-af"])
    assert prune.returncode == 0, prune.stderr
    second = _release(devstack, tmp_path, netns_topology, "--target", "api", "--json", FRACTALOPS_CACHE_BRANCH=scope)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "build cache unavailable" not in second.stderr
    (built,) = json.loads(second.stdout)["targets"]
    assert (built["cache_import"], built["cache_export"]) == ("hit", "ok")
    assert built["cache_hit_ratio"] == 1.0
    assert f"importing cache manifest from {namespaced_registry.endpoint}/fractalops/buildcache" in second.stderr
    assert _events(tmp_path)[-1]["cache_import"] == "hit"

    # promote reads the image's manifest and labels from the same registry, in the topology's scheme.
    clone = _clone_with_remote(tmp_path)
    promote = subprocess.run(
        [sys.executable, "-m", "release", "promote", "--dry-run", "--force", f"api={built['image_ref']}"],
        cwd=clone,
        env={**os.environ, **devstack.env, "FRACTALOPS_TOPOLOGY": str(netns_topology)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert promote.returncode == 0, promote.stderr[-3000:]
    assert str(parse_pinned_ref(built["image_ref"]).digest) in promote.stdout + promote.stderr
