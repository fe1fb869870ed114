"""The local build stack end to end: builds through the mirror, registry cache, failures, down, idempotent up."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from release.devstack import down, status, up
from release.devstack.network import bridge_exists, bridge_name, ports_reserved
from release.devstack.probes import port_listening
from release.devstack.processes import pids_mentioning
from release.devstack.seed import catalog
from release.errors import UsageError

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack

# The busybox stand-in of the release Dockerfile: these tests need *a* build through the stack, not the real images.
TINY_CONTEXT = Path(__file__).resolve().parents[2] / "tests" / "integration" / "tiny"

# Options every cache export uses: the layout Nexus >= 3.71 accepts, and a broken cache never fails a build.
CACHE_TO_OPTIONS = "mode=max,image-manifest=true,oci-mediatypes=true"


def closed_port() -> int:
    """Return a loopback port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_base(span: int = 4) -> int:
    """A port base whose `span` ports, bridge and bridge subnet are all free now (other stacks share this machine)."""
    import random
    import re
    import subprocess

    addresses = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    subnets_in_use = {int(x) for x in re.findall(r"10\.213\.(\d+)\.", addresses)}
    for _ in range(200):
        base = random.randrange(36000, 39900, 10)
        if (base // 10) % 256 in subnets_in_use:
            continue
        try:
            for port in range(base, base + span):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free loopback port range between 36000 and 39900")


def build_args(target: str, *extra: str) -> list[str]:
    """Return a `docker buildx build` command line for one target of the tiny stand-in context."""
    return ["buildx", "build", "--target", target, "--build-arg", "SOURCE_COMMIT=test", *extra, str(TINY_CONTEXT)]


def rawjson_vertices(stderr: str) -> dict[str, dict[str, Any]]:
    """Return the merged records of each vertex in a `--progress=rawjson` stream (indented JSON objects)."""
    decoder = json.JSONDecoder()
    vertices: dict[str, dict[str, Any]] = {}
    position = stderr.find("{")
    while position != -1:
        try:
            record, end = decoder.raw_decode(stderr, position)
        except ValueError:
            position = stderr.find("{", position + 1)
            continue
        for vertex in record.get("vertexes") or [] if isinstance(record, dict) else []:
            merged = vertices.setdefault(vertex["digest"], {})
            merged.update({k: v for k, v in vertex.items() if v is not None})
        position = stderr.find("{", end)
    return vertices


def step_vertices(vertices: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the vertices that are RUN or COPY steps of the Dockerfile."""
    return [v for v in vertices.values() if " RUN " in f" {v.get('name', '')}" or " COPY " in f" {v.get('name', '')}"]


def test_up_builds_both_images_through_the_pull_through_mirror(devstack: Devstack) -> None:
    # After up, api and worker build and push to the hosted registry; both base images came through the mirror.
    for target in ("api", "worker"):
        ref = f"{devstack.hosted}/yamonco/fractalops-{target}:itest"
        result = devstack.docker(build_args(target, "--push", "-t", ref))
        assert result.returncode == 0, result.stderr[-3000:]
    assert {"library/busybox", "library/debian"} <= set(catalog(devstack.ports.pull_through))
    assert {"yamonco/fractalops-api", "yamonco/fractalops-worker"} <= set(catalog(devstack.ports.hosted))
    assert devstack.topology.is_file()


def test_rebuild_after_prune_takes_every_step_from_the_registry_cache(devstack: Devstack) -> None:
    # A build exports its cache to the hosted registry; after a prune, a rebuild from that cache runs no step.
    cache_ref = f"{devstack.hosted}/fractalops/buildcache:itest-{uuid.uuid4().hex[:8]}"
    image = f"{devstack.hosted}/yamonco/fractalops-api:cache-itest"
    first = devstack.docker(
        build_args(
            "api",
            "--push",
            "-t",
            image,
            "--cache-to",
            f"type=registry,ref={cache_ref},{CACHE_TO_OPTIONS},ignore-error=true",
        )
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "fractalops/buildcache" in catalog(devstack.ports.hosted)
    prune = devstack.docker(["buildx", "prune", "-af"])
    assert prune.returncode == 0, prune.stderr
    devstack.docker(["image", "rm", "-f", image])
    again = devstack.docker(
        build_args("api", "--progress=rawjson", "-t", image, "--cache-from", f"type=registry,ref={cache_ref}")
    )
    assert again.returncode == 0, again.stderr[-3000:]
    steps = step_vertices(rawjson_vertices(again.stderr))
    assert len(steps) >= 2, f"expected the base and api RUN steps, saw {[s.get('name') for s in steps]}"
    not_cached = [s.get("name") for s in steps if not s.get("cached")]
    assert not not_cached, f"steps executed instead of cached: {not_cached}"


def test_closed_cache_port_is_ignored_with_ignore_error_and_fails_without(devstack: Devstack) -> None:
    # A cache registry whose port is closed does not fail the build with ignore-error=true, and does without it.
    port = closed_port()
    cache_ref = f"127.0.0.1:{port}/fractalops/buildcache:closed"
    tolerant = devstack.docker(
        build_args("worker", "--cache-to", f"type=registry,ref={cache_ref},{CACHE_TO_OPTIONS},ignore-error=true")
    )
    assert tolerant.returncode == 0, tolerant.stderr[-3000:]
    strict = devstack.docker(build_args("worker", "--cache-to", f"type=registry,ref={cache_ref},{CACHE_TO_OPTIONS}"))
    assert strict.returncode != 0
    assert "connection refused" in strict.stderr.lower()


def test_down_stops_every_process_and_closes_every_port(devstack: Devstack, tmp_path: Path) -> None:
    # down on a second, separate stack leaves no process of it, no listening port and no bridge, even with
    # another stack's port base exported: a stack's own state decides which ports and bridge down acts on.
    state_dir = tmp_path / "ds"
    stack = up(state_dir, free_port_base(), log=lambda _m: None)
    exported = devstack.ports.base  # FRACTALOPS_DEVSTACK_PORT_BASE of the session's stack, as the CLI passes it
    before = status(state_dir, exported)
    assert before.healthy, before
    assert ports_reserved(stack.ports), "the kernel never hands a running stack's ports out as ephemeral ports"
    pids = [c.pid for c in before.components if c.pid]
    assert len(pids) == 6
    stopped = down(state_dir, exported, log=lambda _m: None)
    assert len(stopped) == 6
    assert not [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _proc_state(p)]
    assert not pids_mentioning(str(state_dir))
    assert not [p for p in stack.ports.all_ports() if port_listening(p)]
    assert not bridge_exists(bridge_name(stack.ports))
    assert not ports_reserved(stack.ports), "down gives the stack's ports back to the ephemeral range"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(state_dir.resolve()) not in mounts, "down leaves nothing mounted inside the state folder"
    assert status(state_dir).exit_code == 1
    # The session stack is untouched.
    assert status(devstack.paths.root).healthy


def _proc_state(pid: int) -> str:
    """Return the state letter of a process ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_up_with_a_port_taken_starts_nothing(devstack: Devstack, tmp_path: Path) -> None:
    # A busy port is found before anything starts: no half-started stack is left behind.
    state_dir = tmp_path / "busy"
    base = free_port_base()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", base + 1))
        sock.listen(1)
        with pytest.raises(UsageError, match=f"127.0.0.1:{base + 1} is already in use"):
            up(state_dir, base, log=lambda _m: None)
    assert not pids_mentioning(str(state_dir))
    down(state_dir, log=lambda _m: None)


def test_a_failed_up_stops_what_it_started_and_removes_its_bridge(devstack: Devstack, tmp_path: Path) -> None:
    # The engine cannot start (its data root is a file): up fails and leaves no process, bridge or mount behind.
    from release.devstack.paths import StackPaths
    from release.errors import ReleaseError

    state_dir = tmp_path / "broken"
    base = free_port_base()
    paths = StackPaths(state_dir.absolute())
    paths.docker_data_root.parent.mkdir(parents=True, exist_ok=True)
    paths.docker_data_root.write_text("not a folder\n")
    with pytest.raises(ReleaseError, match="exited right after start"):  # dockerd (or a port another process took)
        up(state_dir, base, log=lambda _m: None)
    assert not pids_mentioning(str(state_dir)), "a failed up leaves its processes running"
    assert not [p for p in (base, base + 1, base + 2, base + 3) if port_listening(p)]
    from release.devstack.ports import port_layout

    assert not bridge_exists(bridge_name(port_layout(base)))
    assert not ports_reserved(port_layout(base))
    assert str(state_dir.resolve()) not in Path("/proc/self/mountinfo").read_text()
    assert status(devstack.paths.root).healthy


def test_second_up_is_idempotent_and_fast(devstack: Devstack) -> None:
    # A second up on a running stack changes nothing, keeps every pid, and returns in under 5 s.
    before = {c.name: c.pid for c in status(devstack.paths.root).components}
    topology_mtime = devstack.topology.stat().st_mtime_ns
    started = time.monotonic()
    again = up(devstack.paths.root, devstack.ports.base, log=lambda _m: None)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0
    assert again.changed is False
    assert {c.name: c.pid for c in status(devstack.paths.root).components} == before
    assert devstack.topology.stat().st_mtime_ns == topology_mtime
