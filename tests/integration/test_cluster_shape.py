"""The devstack's cluster shape end to end: hosts in namespaces, Nexus connectors with credentials, two runners.

`devstack up --shape cluster` once for the module (its own subnet and namespaces, from the tests' port base); the
smoke release of the real images (ops/containers/fractalops: debian:trixie-slim through the group connector, Debian
and Python packages from the nexus host's web port, resolved by the cluster DNS) runs on runner-1, then on runner-2
(a fresh engine with an empty builder), which must build from the cache runner-1 exported to the hosted connector;
the released images pass the smoke check. The last tests take the shape down and check nothing is left
(`down --shape cluster`: the loopback stack of the session, in the same state dir, keeps running).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SESSION_PORT_BASE, SESSION_STATE_DIR, Devstack, cannot_install_reason

from release.devstack.cluster import dns
from release.devstack.cluster.credentials import read_credentials
from release.devstack.cluster.hosts import NETNS_ETC, ClusterNet, link_exists, netns_exists
from release.devstack.cluster.oci import PlainRegistry, sha256
from release.devstack.cluster.paths import ClusterPaths
from release.devstack.paths import StackPaths
from release.imageref import parse_pinned_ref

pytestmark = [pytest.mark.devstack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NET = ClusterNet(SESSION_PORT_BASE)
PATHS = ClusterPaths(StackPaths(SESSION_STATE_DIR))
SCOPE = f"itest-{uuid.uuid4().hex[:8]}"  # this run's cache tags: runner-2's hits can only come from runner-1's export


def cli_env(**env: str) -> dict[str, str]:
    """The environment of `fractalops-release` run against the tests' state dir by a person outside CI, with `env`."""
    full = {
        k: v for k, v in os.environ.items() if k not in {"CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"}
    }
    full.update(
        {
            "FRACTALOPS_DEVSTACK_DIR": str(SESSION_STATE_DIR),
            "FRACTALOPS_DEVSTACK_PORT_BASE": str(SESSION_PORT_BASE),
            **env,
        }
    )
    return full


def cli(*args: str, timeout: float = 900.0, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `fractalops-release ARGS` against the tests' state dir, as a person outside CI would."""
    return subprocess.run(
        [sys.executable, "-m", "release", *args],
        cwd=ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def release_on(runner: str, events: Path) -> subprocess.CompletedProcess[str]:
    """The smoke release through `devstack exec` on a runner, its events in a file of the test's own."""
    return cli(
        "devstack", "exec", "--host", runner, "--", "./ops/containers/fractalops/release.sh",
        FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE="1",
        FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="0",
        FRACTALOPS_CACHE_BRANCH=SCOPE,
        FRACTALOPS_BUILD_EVENTS_FILE=str(events),
    )  # fmt: skip


def events_of(path: Path) -> dict[str, dict[str, Any]]:
    """The Build Plane Events of a file, by target."""
    return {e["target"]: e for e in (json.loads(line) for line in path.read_text().splitlines())}


def processes_under(folder: Path) -> list[str]:
    """Command lines of live processes that mention a folder (the shape's engines, registries, shims)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """The cluster shape, up for the module; taken down at the end even when a test failed."""
    reason = cannot_install_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    up = cli("devstack", "up", "--shape", "cluster")
    print(f"cluster up: {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert up.returncode == 0, up.stderr[-3000:]
    # Every address the tests reach is inside the namespaces this shape made (nothing goes anywhere else).
    assert all(netns_exists(ns) for ns in NET.namespaces()), f"the shape is not on port base {SESSION_PORT_BASE}"
    try:
        yield
    finally:
        cli("devstack", "down", "--shape", "cluster")


@pytest.fixture(scope="module")
def releases(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """runner-1's smoke release, then runner-2's: their outputs and events."""
    folder = tmp_path_factory.mktemp("cluster-events")
    done: dict[str, Any] = {}
    for runner in ("runner-1", "runner-2"):
        started = time.monotonic()
        result = release_on(runner, folder / f"{runner}.jsonl")
        print(f"release on {runner}: {time.monotonic() - started:.1f} s", file=sys.stderr)
        assert result.returncode == 0, f"{runner}: {result.stderr[-3000:]}"
        done[runner] = {"result": result, "events": events_of(folder / f"{runner}.jsonl")}
        ratios = {t: e["cache_hit_ratio"] for t, e in done[runner]["events"].items()}
        print(f"{runner} cache hit ratios: {ratios}", file=sys.stderr)
    return done


def test_each_host_is_a_namespace_resolving_nexus_and_the_registries_run_inside_the_nexus_host(cluster: None) -> None:
    # Four hosts and a hub exist; every host resolves nexus.nexus.svc to the nexus host; no registry is in the root namespace.
    assert all(netns_exists(ns) for ns in NET.namespaces())
    nexus = NET.host("nexus")
    for host in NET.hosts():
        looked_up = subprocess.run(
            ["ip", "netns", "exec", host.namespace, "getent", "hosts", "nexus.nexus.svc"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert looked_up.stdout.split()[:1] == [nexus.address], (host.name, looked_up)
    assert subprocess.run(["getent", "hosts", "nexus.nexus.svc"], capture_output=True, check=False).returncode != 0
    for role in ("upstream", "hosted", "group"):
        pid = (PATHS.host("nexus").pidfile(f"registry-{role}")).read_text().split()[0]
        where = subprocess.run(["ip", "netns", "identify", pid], capture_output=True, text=True, check=True)
        assert where.stdout.strip() == nexus.namespace, role


def test_connectors_refuse_anonymous_clients_and_accept_the_stacks_credentials(cluster: None) -> None:
    # The hosted and group connectors answer 401 without credentials and 200 with the generated ones.
    credentials = read_credentials(PATHS.secrets)
    assert credentials is not None
    address = NET.host("nexus").address
    for port in (8082, 8083):
        assert PlainRegistry(f"{address}:{port}", timeout=5).answers() == 401
        assert (
            PlainRegistry(f"{address}:{port}", credentials.username, credentials.password, timeout=5).answers() == 200
        )
    secret_files = [PATHS.secrets / "nexus-credentials.json", PATHS.htpasswd]
    secret_files += [PATHS.host(r).docker_config / "config.json" for r in ("runner-1", "runner-2")]
    assert {oct(f.stat().st_mode & 0o777) for f in secret_files} == {"0o600"}


def test_exec_runs_inside_the_host_with_its_engine_and_passes_the_exit_code_through(cluster: None) -> None:
    # A command on runner-2 sees runner-2's address and engine; its exit code is the command's.
    shown = cli(
        "devstack", "exec", "--host", "runner-2", "--", "sh", "-c", 'ip -br addr show eth0; echo "$DOCKER_HOST"'
    )
    assert shown.returncode == 0, shown.stderr
    assert NET.host("runner-2").address in shown.stdout
    assert str(PATHS.host("runner-2").docker_socket) in shown.stdout
    assert cli("devstack", "exec", "--host", "nexus", "--", "sh", "-c", "exit 7").returncode == 7
    info = cli("devstack", "exec", "--", "docker", "info", "--format", "{{json .RegistryConfig.Mirrors}}")
    assert json.loads(info.stdout) == ["http://nexus.nexus.svc:8083/"]


def test_runner_2_builds_both_targets_from_the_cache_runner_1_exported_to_nexus(releases: dict[str, Any]) -> None:
    # runner-2's engine is fresh: its Build Plane Events show a cache hit ratio of at least 0.9 for both targets,
    # imported from the hosted connector by its service name.
    first, second = releases["runner-1"], releases["runner-2"]
    assert set(first["events"]) == set(second["events"]) == {"api", "worker"}
    for target in ("api", "worker"):
        assert first["events"][target]["cache_export"] == "ok"
        event = second["events"][target]
        assert event["cache_import"] == "hit", event
        assert event["cache_hit_ratio"] >= 0.9, event
        wanted = f"importing cache manifest from nexus.nexus.svc:8082/fractalops/buildcache:{target}-"
        assert wanted in second["result"].stderr
    assert "build cache unavailable" not in first["result"].stderr + second["result"].stderr


def test_both_image_refs_resolve_in_the_hosted_connector_and_pass_the_smoke_check(releases: dict[str, Any]) -> None:
    # Each image_ref runner-2 printed is served by the hosted connector; on runner-1 (which pulls them by digest)
    # the api answers HTTP on its port and the worker runs its job loop.
    refs = [line.removeprefix("image_ref=") for line in releases["runner-2"]["result"].stdout.splitlines()]
    assert len(refs) == 2
    credentials = read_credentials(PATHS.secrets)
    assert credentials is not None
    hosted = PlainRegistry(f"{NET.host('nexus').address}:8082", credentials.username, credentials.password)
    by_role = {}
    for ref in refs:
        pinned = parse_pinned_ref(ref)
        assert pinned.registry == "nexus.nexus.svc:8082"
        assert hosted.manifest_digest(pinned.path, pinned.digest or "") == pinned.digest
        by_role[pinned.path.rsplit("-", 1)[-1]] = ref
    assert set(by_role) == {"api", "worker"}
    started = time.monotonic()
    smoked = cli(
        "devstack", "exec", "--host", "runner-1", "--",
        "python", "-m", "release", "devstack", "smoke", f"api={by_role['api']}", f"worker={by_role['worker']}",
    )  # fmt: skip
    print(f"smoke on runner-1: {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert smoked.returncode == 0, smoked.stdout + smoked.stderr[-3000:]
    assert '"/healthz": [200, {"service": "fractalops-api", "status": "ok"}]' in smoked.stdout
    assert "smoke worker: ok:" in smoked.stdout and "job 2 done" in smoked.stdout


# A RUN step that must find the web port by the service name in DNS: the build container's /etc/hosts (BuildKit's
# own) does not name it. bash's /dev/tcp resolves with getaddrinfo, as pip and apt do.
PROBE_DOCKERFILE = """\
FROM debian:trixie-slim
RUN ["bash", "-c", "! grep -q nexus.nexus.svc /etc/hosts && getent hosts nexus.nexus.svc && exec 3<>/dev/tcp/nexus.nexus.svc/8081 && printf 'GET /repository/pypi-group/simple/ HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | tee /dev/stderr | grep -q ' 200 '"]
"""


@pytest.mark.parametrize("builder", ["default", "shared"])
def test_build_steps_find_the_web_port_through_the_cluster_dns(cluster: None, builder: str, tmp_path: Path) -> None:
    # On a runner's own engine (RUN containers NATed out of its docker0) and on the shared buildkitd, a RUN step
    # resolves the Nexus service name through the cluster DNS on the nexus host and gets the pypi-group index.
    nexus = NET.host("nexus")
    pid = PATHS.host("nexus").pidfile(dns.DNS).read_text().split()[0]
    where = subprocess.run(["ip", "netns", "identify", pid], capture_output=True, text=True, check=True)
    assert where.stdout.strip() == nexus.namespace
    assert dns.lookup(nexus.address, "nexus.nexus.svc") == nexus.address
    (tmp_path / "Dockerfile").write_text(PROBE_DOCKERFILE)
    built = cli(
        "devstack", "exec", "--host", "runner-1", "--",
        "docker", "buildx", "build", "--builder", builder, "--no-cache", "--progress=plain", str(tmp_path),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert re.search(rf"{re.escape(nexus.address)}\s+nexus\.nexus\.svc", built.stderr), built.stderr[-3000:]
    assert "HTTP/1.1 200 OK" in built.stderr or "HTTP/1.0 200 OK" in built.stderr


def test_runners_release_through_the_shared_buildkit_of_the_builder_host(
    releases: dict[str, Any], tmp_path: Path
) -> None:
    # Each runner has builder `shared` (remote driver, mutual TLS, buildkit.fractalops.svc in the builder host);
    # the real images, released through it from each runner, have every step cached on runner-2.
    pid = (PATHS.host("builder").root / "buildkitd" / "buildkitd.pid").read_text().split()[0]
    where = subprocess.run(["ip", "netns", "identify", pid], capture_output=True, text=True, check=True)
    assert where.stdout.strip() == NET.host("builder").namespace
    for runner in ("runner-1", "runner-2"):
        result = cli(
            "devstack", "exec", "--host", runner, "--", "./ops/containers/fractalops/release.sh",
            FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE="1",
            FRACTALOPS_BUILDER="shared",
            FRACTALOPS_CACHE_BRANCH=SCOPE,
            FRACTALOPS_BUILD_EVENTS_FILE=str(tmp_path / f"{runner}.jsonl"),
        )  # fmt: skip
        assert result.returncode == 0, f"{runner}: {result.stderr[-3000:]}"
    events = events_of(tmp_path / "runner-2.jsonl")
    assert {e["builder"] for e in events.values()} == {"shared"}
    assert [events[t]["cache_hit_ratio"] for t in ("api", "worker")] == [1.0, 1.0]


def test_status_lists_the_hosts_and_what_each_registry_holds(releases: dict[str, Any], devstack: Devstack) -> None:
    # `devstack status` names every host with its address and shows the build cache and images in the hosted connector.
    shown = cli("devstack", "status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for host in NET.hosts():
        assert f"{host.address} (netns {host.namespace})" in shown.stdout
    assert "builder/buildkitd" in shown.stdout and "tcp://buildkit.fractalops.svc:1234" in shown.stdout
    hosted = next(line for line in shown.stdout.splitlines() if "nexus/registry-hosted" in line)
    assert "fractalops/buildcache (" in hosted and "yamonco/fractalops-api (" in hosted
    group = next(line for line in shown.stdout.splitlines() if "nexus/registry-group" in line)
    assert "library/debian (trixie-slim)" in group  # pulled through for the runners' builds
    web = next(line for line in shown.stdout.splitlines() if "nexus/nexus-web" in line)
    assert f"{NET.host('nexus').address}:8081" in web and "pypi-group (" in web and "apt-debian (trixie" in web
    assert "answers nexus.nexus.svc" in next(line for line in shown.stdout.splitlines() if "nexus/dns" in line)
    credentials = read_credentials(PATHS.secrets)
    assert credentials is not None and credentials.password not in shown.stdout + shown.stderr
    hosted_registry = PlainRegistry(f"{NET.host('nexus').address}:8082", credentials.username, credentials.password)
    assert {f"api-{SCOPE}", f"worker-{SCOPE}"} <= set(hosted_registry.tags("fractalops/buildcache"))


TRANSFER_SCRIPT = """
import os, sys, time
from release.devstack.cluster.oci import PlainRegistry
registry = PlainRegistry(sys.argv[1])
started = time.monotonic()
assert len(registry.blob("probe/link", sys.argv[2])) == 1_000_000
down = time.monotonic() - started
started = time.monotonic()
registry.push_blob("probe/up", os.urandom(1_000_000))
print(down, time.monotonic() - started)
"""


def test_a_shaped_link_limits_both_directions_and_drops_at_the_loss_rate(cluster: None) -> None:
    # `devstack link --rate 4mbit` makes a 1 MB transfer take about 2 s each way; --loss adds the drop rule; --clear undoes both.
    blob = os.urandom(1_000_000)
    upstream = f"{NET.host('nexus').address}:5000"
    PlainRegistry(upstream).push_blob("probe/link", blob)
    shaped = cli("devstack", "link", "--host", "runner-1", "--rate", "4mbit", "--loss", "0.5%")
    assert shaped.returncode == 0, shaped.stderr
    try:
        timed = cli(
            "devstack",
            "exec",
            "--host",
            "runner-1",
            "--",
            sys.executable,
            "-c",
            TRANSFER_SCRIPT,
            upstream,
            sha256(blob),
        )
        assert timed.returncode == 0, timed.stderr
        down_s, up_s = (float(t) for t in timed.stdout.split())
        assert 1.5 < down_s < 4.0 and 1.5 < up_s < 4.0, timed.stdout  # 1 MB at 0.5 MB/s: 2 s, plus loss
        rules = subprocess.run(
            ["ip", "netns", "exec", NET.host("runner-1").namespace, "iptables", "-t", "mangle", "-S", "FX-LINK-LOSS"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (probability,) = re.findall(r"--probability ([0-9.]+) -j DROP", rules)
        assert float(probability) == pytest.approx(0.005)
    finally:
        cleared = cli("devstack", "link", "--host", "runner-1", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    quick = cli(
        "devstack", "exec", "--host", "runner-1", "--", sys.executable, "-c", TRANSFER_SCRIPT, upstream, sha256(blob)
    )
    assert quick.returncode == 0, quick.stderr
    assert max(float(t) for t in quick.stdout.split()) < 0.5, quick.stdout


RTT_SCRIPT = """
import socket, statistics, sys, time
times = []
for _ in range(7):
    started = time.monotonic()
    socket.create_connection((sys.argv[1], 5000), timeout=5).close()
    times.append(time.monotonic() - started)
print(statistics.median(times))
"""


def test_a_delayed_link_adds_the_delay_each_way_and_clearing_it_stops_the_delayer(cluster: None) -> None:
    # `--delay 40ms` on runner-2 makes a TCP handshake with the nexus host take about 80 ms; --delay 0 undoes it.
    nexus = NET.host("nexus").address
    delayed = cli("devstack", "link", "--host", "runner-2", "--delay", "40ms")
    assert delayed.returncode == 0, delayed.stderr
    try:
        timed = cli("devstack", "exec", "--host", "runner-2", "--", sys.executable, "-c", RTT_SCRIPT, nexus)
        assert timed.returncode == 0, timed.stderr
        assert 0.075 < float(timed.stdout) < 0.2, timed.stdout
        assert "delay 40ms each way" in cli("devstack", "status").stdout
    finally:
        undone = cli("devstack", "link", "--host", "runner-2", "--delay", "0")
    assert undone.returncode == 0, undone.stderr
    assert not PATHS.host("runner-2").pidfile("link-delay").exists()
    quick = cli("devstack", "exec", "--host", "runner-2", "--", sys.executable, "-c", RTT_SCRIPT, nexus)
    assert float(quick.stdout) < 0.02, quick.stdout


def test_down_leaves_no_namespace_link_hosts_file_or_process(cluster: None) -> None:
    # After `devstack down`: no namespace of the stack, no /etc/netns folder, no root link, no process of the shape.
    down = cli("devstack", "down", "--shape", "cluster")
    assert down.returncode == 0, down.stderr[-3000:]
    assert [ns for ns in NET.namespaces() if netns_exists(ns)] == []
    assert [ns for ns in NET.namespaces() if (NETNS_ETC / ns).exists()] == []
    assert not link_exists(NET.root_link)
    assert processes_under(PATHS.root) == []
    assert not PATHS.record.exists()
    assert not PATHS.host("runner-2").docker_data_root.exists()  # runners are ephemeral: the next up starts empty


def test_a_failed_up_takes_down_everything_it_had_made(tmp_path: Path) -> None:
    # A port the hosted connector needs is taken inside the nexus host: `up` fails naming it and leaves nothing behind.
    reason = cannot_install_reason()
    if reason:
        pytest.skip(reason)
    other = ClusterNet(SESSION_PORT_BASE + 10)
    squatter_ns = other.host("nexus").namespace
    subprocess.run(["ip", "netns", "add", squatter_ns], check=True)
    squatter = subprocess.Popen(
        ["ip", "netns", "exec", squatter_ns, sys.executable, "-c",
         "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 8082)); s.listen(); time.sleep(300)"],
    )  # fmt: skip
    try:
        failed = cli("devstack", "up", "--shape", "cluster", FRACTALOPS_DEVSTACK_PORT_BASE=str(other.base))
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert "registry-hosted" in failed.stderr.splitlines()[-1] or "registry-hosted" in failed.stderr
        assert [ns for ns in other.namespaces() if netns_exists(ns)] == []
        assert not link_exists(other.root_link)
        assert squatter.wait(timeout=30) is not None  # stopped with everything else in the shape's namespaces
        assert processes_under(PATHS.root) == []
    finally:
        if squatter.poll() is None:
            squatter.kill()
        subprocess.run(["ip", "netns", "delete", squatter_ns], check=False, capture_output=True)
    cli("devstack", "down", "--shape", "cluster")
    assert not PATHS.record.exists()
