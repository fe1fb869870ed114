"""A fresh runner's docker-container builder in the cluster shape: the offline BuildKit image, warm from the cache alone.

`devstack up --shape cluster` seeds `moby/buildkit:buildx-stable-1` into the group connector's upstream: the
project's buildkitd and buildctl and Debian's runc on the base rootfs, made offline. runner-1 releases the real
images into this run's cache scope with its own engine's builder; runner-2 then creates a docker-container builder
with the project's `builder create` (a new container and state volume: empty), whose buildkitd.toml is rendered from
the topology, and releases the same commit: every step must come from the hosted connector's cache, and both image
refs must resolve there. `devstack down` must take the builder's container with runner-2's engine, leaving nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_cluster_shape import NET, PATHS, cli, cluster, events_of, processes_under, release_on

from release.devstack.cluster import buildkit_image
from release.devstack.cluster.credentials import read_credentials
from release.devstack.cluster.oci import PlainRegistry
from release.devstack.cluster.runners import state_home
from release.devstack.cluster.topology import UPSTREAM_PORT
from release.imageref import parse_pinned_ref

pytestmark = [pytest.mark.devstack, pytest.mark.slow]
__all__ = ["cluster"]  # the shape's module fixture, shared with test_cluster_shape.py

BUILDER = f"fresh-{uuid.uuid4().hex[:6]}"
CONTAINER = f"buildx_buildkit_{BUILDER}0"  # buildx's name for the builder's one node


def on(runner: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command on a runner through `devstack exec`."""
    return cli("devstack", "exec", "--host", runner, "--", *command)


@pytest.fixture(scope="module")
def releases(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """runner-1's release (its engine's builder), then runner-2's through a docker-container builder made for it."""
    folder = tmp_path_factory.mktemp("container-builder-events")
    started = time.monotonic()
    first = release_on("runner-1", folder / "runner-1.jsonl")
    print(f"release on runner-1: {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert first.returncode == 0, first.stderr[-3000:]
    started = time.monotonic()
    created = on("runner-2", "fractalops-release", "builder", "create", "--driver", "docker-container",
                 "--name", BUILDER, "--use")  # fmt: skip
    print(f"builder create on runner-2: {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert created.returncode == 0, created.stdout + created.stderr[-3000:]
    usage = on("runner-2", "docker", "buildx", "du", "--builder", BUILDER)
    container = on("runner-2", "docker", "inspect", CONTAINER)
    assert container.returncode == 0, container.stderr
    started = time.monotonic()
    second = release_on("runner-2", folder / "runner-2.jsonl")
    print(f"release on runner-2 ({BUILDER}): {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert second.returncode == 0, second.stderr[-3000:]
    return {
        "runner-1": {"result": first, "events": events_of(folder / "runner-1.jsonl")},
        "runner-2": {"result": second, "events": events_of(folder / "runner-2.jsonl")},
        "usage_before": usage.stdout,
        "container": json.loads(container.stdout)[0],
    }


def test_up_seeds_the_offline_buildkit_image_where_buildx_pulls_its_default_from(cluster: None) -> None:
    # The upstream (docker.io's stand-in) serves moby/buildkit:buildx-stable-1 as the state folder recorded it: the
    # base image's own layer first, then the tools; buildkitd is the entrypoint, /var/lib/buildkit a volume.
    record = json.loads((buildkit_image.image_dir(PATHS.stack) / "image.json").read_text())
    upstream = PlainRegistry(f"{NET.host('nexus').address}:{UPSTREAM_PORT}", timeout=30)
    assert upstream.manifest_digest("moby/buildkit", "buildx-stable-1") == record["digest"]
    manifest = upstream.manifest("moby/buildkit", record["digest"])
    config = json.loads(upstream.blob("moby/buildkit", manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["buildkitd"]
    assert config["config"]["Volumes"] == {"/var/lib/buildkit": {}}
    debian = upstream.manifest("library/debian", "trixie-slim")
    assert [layer["digest"] for layer in manifest["layers"]][:1] == [debian["layers"][0]["digest"]]
    assert len(manifest["layers"]) == 2


def test_the_builder_runs_the_seeded_image_in_runner_2s_engine_and_starts_empty(releases: dict[str, Any]) -> None:
    # The container is runner-2's, privileged, from the docker-group's moby/buildkit at the seeded digest, with the
    # rendered buildkitd.toml (plain-HTTP connectors by service name) and no cache before the release.
    record = json.loads((buildkit_image.image_dir(PATHS.stack) / "image.json").read_text())
    container = releases["container"]
    assert container["Config"]["Image"] == "nexus.nexus.svc:8083/moby/buildkit:buildx-stable-1"
    assert container["Image"] == record["digest"]
    assert container["HostConfig"]["Privileged"] is True
    assert "--config" in container["Args"]
    assert "Total:\t\t0B" in releases["usage_before"], releases["usage_before"]
    toml = state_home(PATHS.host("runner-2")) / "fractalops-release" / "builders" / BUILDER / "buildkitd.toml"
    text = toml.read_text()
    assert 'mirrors = ["nexus.nexus.svc:8083"]' in text and '[registry."nexus.nexus.svc:8082"]\n  http = true' in text


def test_runner_2s_fresh_container_builder_takes_every_step_from_runner_1s_cache(releases: dict[str, Any]) -> None:
    # Both targets: built by the new builder, the cache imported from the hosted connector, every step cached.
    first, second = releases["runner-1"]["events"], releases["runner-2"]["events"]
    assert set(first) == set(second) == {"api", "worker"}
    assert {first[t]["cache_export"] for t in first} == {"ok"}
    for target in ("api", "worker"):
        event = second[target]
        assert event["builder"] == BUILDER, event
        assert event["cache_import"] == "hit", event
        assert event["cache_hit_ratio"] == 1.0, event
    stderr = releases["runner-2"]["result"].stderr
    assert "importing cache manifest from nexus.nexus.svc:8082/fractalops/buildcache:api-" in stderr


def test_both_image_refs_resolve_in_the_hosted_connector(releases: dict[str, Any]) -> None:
    # Each image_ref runner-2 printed is served by the hosted connector at that digest.
    refs = [line.removeprefix("image_ref=") for line in releases["runner-2"]["result"].stdout.splitlines()]
    assert len(refs) == 2
    credentials = read_credentials(PATHS.secrets)
    assert credentials is not None
    hosted = PlainRegistry(f"{NET.host('nexus').address}:8082", credentials.username, credentials.password)
    for ref in refs:
        pinned = parse_pinned_ref(ref)
        assert pinned.registry == "nexus.nexus.svc:8082"
        assert hosted.manifest_digest(pinned.path, pinned.digest or "") == pinned.digest
    assert {parse_pinned_ref(ref).path.rsplit("-", 1)[-1] for ref in refs} == {"api", "worker"}


def _alive(pid: int, start: str) -> bool:
    """Return whether the process `pid` still runs and is the one that started at `start` (not a reused pid)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == start
    except (OSError, IndexError):
        return False


def test_down_takes_the_builder_container_with_the_runner(releases: dict[str, Any]) -> None:
    # After `devstack down`: the container's init and buildkitd are gone, no process names the state folder (the
    # shims did), nothing is mounted under it, runner-2's engine state and its user state are deleted.
    pid = int(releases["container"]["State"]["Pid"])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    tracked = {p: Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[19] for p in [pid, *map(int, children)]}
    assert any("buildkitd" in Path(f"/proc/{p}/cmdline").read_text() for p in tracked)
    down = cli("devstack", "down", "--shape", "cluster")
    assert down.returncode == 0, down.stderr[-3000:]
    assert [p for p, start in tracked.items() if _alive(p, start)] == []
    assert processes_under(PATHS.root) == []
    mounts = Path("/proc/mounts").read_text()
    assert [line for line in mounts.splitlines() if str(PATHS.root) in line] == []
    runner = PATHS.host("runner-2")
    assert not runner.docker_data_root.exists() and not state_home(runner).exists()
    assert os.path.exists(buildkit_image.image_dir(PATHS.stack) / "tools.tar.gz")  # kept for `up`
