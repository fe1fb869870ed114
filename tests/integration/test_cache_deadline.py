"""The cache deadline on the local stack: a slow export that moves bytes completes; a silent or crawling one is cut after the push."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from loopback_proxy import LoopbackProxy
from ruamel.yaml import YAML
from test_release_driver import ROOT, assert_in_registry, events, image_refs, release, targets_with_context

from release.build.cache import cache_scope
from release.imageref import ImageRef, parse_image_ref, parse_pinned_ref

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack

DEADLINE_S = 3.0
LAYER_BYTES = 200 * 1024 * 1024  # the one big layer of tests/integration/bigblob


def topology_with_cache_behind(stack: Devstack, tmp_path: Path, port: int) -> tuple[Path, str]:
    """A copy of the stack's topology whose build cache sits at 127.0.0.1:`port`, in a repository of this test's own.

    The repository is new, so every layer is uploaded (none is there yet); the images still go to the stack.
    """
    yaml = YAML()
    data = yaml.load(stack.topology.read_text())
    path = f"fractalops/buildcache-{uuid.uuid4().hex[:8]}"
    data["nexus"]["docker_internal_port"] = port
    data["registry_cache"]["buildcache_ref"] = f"127.0.0.1:{port}/{path}"
    topology = tmp_path / "topology-cache-behind-proxy.yaml"
    with topology.open("w") as handle:
        yaml.dump(data, handle)
    return topology, path


def stack_manifest_digest(ref: ImageRef) -> str | None:
    """HEAD of `ref`'s manifest (by tag) in a stack registry (plain HTTP on loopback): its digest, None if absent."""
    request = urllib.request.Request(f"http://{ref.registry}/v2/{ref.path}/manifests/{ref.tag}", method="HEAD")
    request.add_header("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            digest: str | None = response.headers.get("Docker-Content-Digest")
            return digest
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def export_seconds(stderr: str) -> float:
    """How long the cache export step ran, from the plain progress lines (`[api] #N … DONE 12.3s`)."""
    number = re.search(r"^\[api\] #(\d+) exporting cache to registry$", stderr, re.M)
    assert number, stderr[-3000:]
    done = re.search(rf"^\[api\] #{number.group(1)} DONE ([0-9.]+)s$", stderr, re.M)
    assert done, stderr[-3000:]
    return float(done.group(1))


def established_to(port: int) -> int:
    """How many established TCP connections on this host go to 127.0.0.1:`port` (from /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == "01" and remote == f"0100007F:{port:04X}":
            count += 1
    return count


def release_big_layer_behind(
    devstack: Devstack, tmp_path: Path, proxy: LoopbackProxy
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Release api (one 200 MB layer) with its cache behind `proxy` in a new branch scope; (result, seconds)."""
    topology, _ = topology_with_cache_behind(devstack, tmp_path, proxy.port)
    started = time.monotonic()
    result = release(
        devstack,
        tmp_path,
        "--target",
        "api",
        "--targets-file",
        str(targets_with_context(tmp_path, "tests/integration/bigblob")),
        topology=topology,
        FRACTALOPS_CACHE_DEADLINE=f"{DEADLINE_S:g}",
        FRACTALOPS_CACHE_BRANCH=f"itest-{uuid.uuid4().hex[:8]}",
        FRACTALOPS_PROGRESS="plain",
    )
    return result, time.monotonic() - started


def test_cache_export_that_keeps_uploading_past_the_deadline_completes(devstack: Devstack, tmp_path: Path) -> None:
    # A 200 MB layer's cache export, throttled to 16 MB/s on loopback, runs several times the 3 s deadline while
    # moving bytes: it is never stopped, the release succeeds and records the export ok, and the cache is written.
    proxy = LoopbackProxy(devstack.ports.hosted, rate=16e6).start()
    branch = f"itest-{uuid.uuid4().hex[:8]}"
    try:
        topology, path = topology_with_cache_behind(devstack, tmp_path, proxy.port)
        result = release(
            devstack,
            tmp_path,
            "--target",
            "api",
            "--targets-file",
            str(targets_with_context(tmp_path, "tests/integration/bigblob")),
            topology=topology,
            FRACTALOPS_CACHE_DEADLINE=f"{DEADLINE_S:g}",
            FRACTALOPS_CACHE_BRANCH=branch,
            FRACTALOPS_PROGRESS="plain",
        )
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    (ref,) = image_refs(result.stdout)
    assert_in_registry(ref)
    assert [(e["result"], e["cache_export"]) for e in events(tmp_path)] == [("ok", "ok")]
    assert export_seconds(result.stderr) > 2 * DEADLINE_S, "the export must outlast the deadline for this to mean much"
    assert proxy.sent_upstream > LAYER_BYTES, "the big layer went to the cache through the throttle"
    cache = parse_image_ref(f"{devstack.hosted}/{path}:api-{cache_scope(branch)}")
    assert stack_manifest_digest(cache) is not None, "the cache manifest was written"


def test_cache_host_that_goes_silent_mid_export_is_cut_and_the_pushed_image_is_released(
    devstack: Devstack, tmp_path: Path
) -> None:
    # The cache host takes 16 MB of the export and then stops answering: the export is stopped at the deadline and
    # the release still prints the image_ref it pushed (the digest the tag names in the registry), exits 0 and
    # records the export failed; once the host closes its connections the engine lets go of them.
    proxy = LoopbackProxy(devstack.ports.hosted, silent_after=16 * 1024 * 1024).start()
    try:
        result, elapsed = release_big_layer_behind(devstack, tmp_path, proxy)
        assert proxy.silent.is_set(), "the cache host went silent during the release"
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    (ref,) = image_refs(result.stdout)
    assert_in_registry(ref)
    pinned = parse_pinned_ref(ref)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tagged = parse_image_ref(f"{pinned.repository}:sha-{head.strip()[:7]}")  # targets.yaml: tag_format sha-{short}
    assert stack_manifest_digest(tagged) == pinned.digest, "the printed digest is what the tag names"
    assert "warning: api: the cache export made no progress for 3 s" in result.stderr
    assert [(e["result"], e["cache_export"]) for e in events(tmp_path)] == [("ok", "failed")]
    assert elapsed < 120, "the deadline bounds the wait"
    deadline = time.monotonic() + 60
    while established_to(proxy.port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert established_to(proxy.port) == 0, "the engine still holds connections to the closed cache host"


def test_cache_export_that_crawls_below_the_minimum_rate_is_cut_and_the_pushed_image_is_released(
    devstack: Devstack, tmp_path: Path
) -> None:
    # The link to the cache host moves 100 KB/s: bytes keep trickling, but below FRACTALOPS_CACHE_MIN_RATE (500 KB/s
    # by default) they are no progress, so the 200 MB export is stopped at the deadline instead of running for half
    # an hour; the release prints the pushed image_ref, exits 0 and records the export failed.
    proxy = LoopbackProxy(devstack.ports.hosted, rate=100e3).start()
    try:
        result, elapsed = release_big_layer_behind(devstack, tmp_path, proxy)
        sent = proxy.sent_upstream
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    (ref,) = image_refs(result.stdout)
    assert_in_registry(ref)
    assert "below FRACTALOPS_CACHE_MIN_RATE=500KB/s" in result.stderr, result.stderr[-3000:]
    assert [(e["result"], e["cache_export"]) for e in events(tmp_path)] == [("ok", "failed")]
    assert 0 < sent < LAYER_BYTES / 4, "bytes crawled to the cache host and the big layer never got through"
    assert elapsed < 120, "the deadline bounds the crawl; at 100 KB/s the layer alone takes over half an hour"
