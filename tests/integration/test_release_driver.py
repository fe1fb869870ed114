"""The release driver on the local stack: smoke release, registry cache, guards, preflight, broken caches."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from ruamel.yaml import YAML
from standins import HangingRegistry, targets_with_context

from release.adapters.registry import RegistryClient
from release.build.cache import cache_scope
from release.imageref import parse_pinned_ref
from release.topology import load_topology

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack

ROOT = Path(__file__).resolve().parents[2]
RELEASE_SH = ROOT / "ops/containers/fractalops/release.sh"
IMAGE_REF = re.compile(r"^image_ref=(?P<ref>\S+@sha256:[0-9a-f]{64})$")
# Tests that need *a* release build, not the real application, build this busybox stand-in (seconds, not a minute).
TINY = "tests/integration/tiny"


def _git_state() -> str:
    """What git sees in the working tree (to check a smoke release leaves it as it was)."""
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def release(
    stack: Devstack, tmp_path: Path, *args: str, topology: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run release.sh as a person would outside CI, with the stack's env and a private events file."""
    full = release_env(stack, tmp_path, topology=topology, **env)
    return subprocess.run([str(RELEASE_SH), *args], env=full, capture_output=True, text=True, timeout=600, check=False)


def release_env(stack: Devstack, tmp_path: Path, topology: Path | None = None, **env: str) -> dict[str, str]:
    """The environment of a release run by a person outside CI: the stack, the opt-in, a private events file."""
    full = {
        k: v for k, v in os.environ.items() if k not in {"CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"}
    }
    full.update(stack.env)
    full.update(
        {
            "FRACTALOPS_TOPOLOGY": str(topology or stack.topology),
            "FRACTALOPS_BUILD_EVENTS_FILE": str(tmp_path / "events.jsonl"),
            "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1",
            "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS": "0",
        }
    )
    full.update(env)
    return full


def tiny(tmp_path: Path) -> tuple[str, str]:
    """The `--targets-file` arguments that build every target from the tiny stand-in context."""
    return "--targets-file", str(targets_with_context(tmp_path, TINY))


def events(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def image_refs(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    matches = [IMAGE_REF.match(line) for line in lines]
    assert all(matches), f"stdout has lines that are not image_ref=…: {lines}"
    return [m.group("ref") for m in matches if m]


def stack_client(registry: str) -> RegistryClient:
    """A client of a registry in the scheme the stack's topology (FRACTALOPS_TOPOLOGY, set by the fixture) gives it."""
    return RegistryClient.for_topology(load_topology(os.environ["FRACTALOPS_TOPOLOGY"]), registry)


def assert_in_registry(ref_text: str) -> None:
    ref = parse_pinned_ref(ref_text)
    assert stack_client(ref.registry).manifest_digest(ref) == ref.digest


def topology_with_cache_at(stack: Devstack, tmp_path: Path, port: int) -> Path:
    """A copy of the stack's topology whose docker-internal (cache) connector is on `port`; images still go to the stack."""
    yaml = YAML()
    data = yaml.load(stack.topology.read_text())
    data["nexus"]["docker_internal_port"] = port
    data["registry_cache"]["buildcache_ref"] = f"127.0.0.1:{port}/fractalops/buildcache"
    path = tmp_path / "topology-broken-cache.yaml"
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


@pytest.fixture
def scope() -> str:
    """A cache branch of this test's own, so tests do not share cache tags."""
    return f"itest-{uuid.uuid4().hex[:8]}"


def test_smoke_release_prints_two_resolvable_image_refs_and_leaves_the_tree_clean(
    devstack: Devstack, tmp_path: Path, scope: str
) -> None:
    # A smoke release prints exactly two image_ref lines whose digests resolve, and changes nothing in git.
    before = _git_state()
    result = release(devstack, tmp_path, FRACTALOPS_CACHE_BRANCH=scope)
    assert result.returncode == 0, result.stderr[-3000:]
    refs = image_refs(result.stdout)
    assert len(refs) == 2
    assert {parse_pinned_ref(r).path for r in refs} == {"yamonco/fractalops-api", "yamonco/fractalops-worker"}
    for ref in refs:
        assert_in_registry(ref)
    assert _git_state() == before
    recorded = events(tmp_path)
    assert {e["target"] for e in recorded} == {"api", "worker"}
    assert all(e["result"] == "ok" and e["cache_export"] == "ok" for e in recorded)


def test_rebuild_from_the_registry_cache_alone_has_hit_ratio_one(
    devstack: Devstack, tmp_path: Path, scope: str
) -> None:
    # After the builder's local cache is pruned, every step of both targets comes from the registry cache.
    first = release(devstack, tmp_path, FRACTALOPS_CACHE_BRANCH=scope)
    assert first.returncode == 0, first.stderr[-3000:]
    prune = devstack.docker(["buildx", "prune", "-af"])
    assert prune.returncode == 0, prune.stderr
    second = release(devstack, tmp_path, "--json", FRACTALOPS_CACHE_BRANCH=scope)
    assert second.returncode == 0, second.stderr[-3000:]
    document = json.loads(second.stdout)
    ratios = {t["target"]: t["cache_hit_ratio"] for t in document["targets"]}
    assert ratios == {"api": 1.0, "worker": 1.0}
    assert {t["cache_import"] for t in document["targets"]} == {"hit"}


def test_release_outside_ci_without_opt_in_is_refused_and_builds_nothing(devstack: Devstack, tmp_path: Path) -> None:
    # Outside CI, without FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE=1, the driver refuses and says how to opt in.
    result = release(devstack, tmp_path, FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE="")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE=1" in result.stderr
    assert events(tmp_path) == []


@pytest.mark.parametrize("value", ["maybe", "2", "off"])
def test_bad_update_gitops_value_is_a_usage_error(devstack: Devstack, tmp_path: Path, value: str) -> None:
    # Any value other than 0/1/true/false/yes/no is a usage error (exit 2), not a silent default.
    result = release(devstack, tmp_path, FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS=value)
    assert result.returncode == 2
    assert "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS" in result.stderr
    assert value in result.stderr
    assert result.stdout == ""
    assert events(tmp_path) == []


def test_docker_stub_that_exits_127_is_refused_in_preflight(devstack: Devstack, tmp_path: Path) -> None:
    # The workspace's docker stub (exit 127) is refused before any work, with one line saying what to do.
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir()
    stub = stub_dir / "docker"
    stub.write_text("#!/bin/sh\necho 'docker: this workspace has no container runtime' >&2\nexit 127\n")
    stub.chmod(0o755)
    result = release(devstack, tmp_path, PATH=f"{stub_dir}:{os.environ['PATH']}")
    assert result.returncode == 1
    assert "stub (exit 127)" in result.stderr
    assert "runtime-release.yml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert events(tmp_path) == []


SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def without_buildx(argv: list[str], env: dict[str, str], tmp_path: Path) -> list[str]:
    """`argv` run where the stack's docker client finds no buildx plugin.

    DOCKER_CONFIG (set by the caller) hides the stack's own plugin; where a system-wide plugin exists too (Debian 13
    packages), an empty folder is mounted over each system plugin folder in a mount namespace of the run's own.
    """
    found = subprocess.run(["docker", "buildx", "version"], env=env, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return argv
    empty = tmp_path / "no-plugins"
    empty.mkdir(exist_ok=True)
    mounts = [f"mount --bind {empty} {folder}" for folder in SYSTEM_PLUGIN_DIRS if Path(folder).is_dir()]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        " && ".join([*mounts, 'exec "$@"']),
        "sh",
        *argv,
    ]


@pytest.mark.parametrize("case", ["no-buildx-no-daemon", "no-buildx", "no-daemon"])
def test_docker_without_buildx_or_daemon_names_the_cause_and_the_way_out(
    devstack: Devstack, tmp_path: Path, case: str
) -> None:
    # A real docker client without its buildx plugin, or with no daemon at DOCKER_HOST, is refused before any work
    # with one line naming what is missing (buildx; the daemon's address) and how to get a stack locally.
    env = release_env(devstack, tmp_path, PATH=f"{devstack.paths.bin_dir}:{os.environ['PATH']}")
    socket_path = tmp_path / "no-daemon.sock"
    if case != "no-buildx":
        env["DOCKER_HOST"] = f"unix://{socket_path}"
    if case != "no-daemon":
        env["DOCKER_CONFIG"] = str(tmp_path / "docker-config-without-plugins")
        Path(env["DOCKER_CONFIG"]).mkdir()
    argv = [str(RELEASE_SH), "--target", "api"]
    if case != "no-daemon":
        argv = without_buildx(argv, env, tmp_path)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert ("docker buildx is missing" in lines[0]) == (case != "no-daemon"), lines[0]
    assert (f"no Docker daemon answers at unix://{socket_path}" in lines[0]) == (case != "no-buildx"), lines[0]
    assert 'eval "$(fractalops-release devstack up)"' in lines[0]
    assert events(tmp_path) == []


def test_portal_target_builds_nothing_and_names_the_frontend_workflow(devstack: Devstack, tmp_path: Path) -> None:
    # Asking for the portal says it is released from fractalops-frontend and prints the gh command.
    result = release(devstack, tmp_path, "--target", "portal")
    assert result.returncode == 2
    assert 'gh workflow run "Portal GitOps Release" --repo yamonco/fractalops-frontend' in result.stderr
    assert events(tmp_path) == []


def test_dry_run_prints_the_plan_with_cache_flags_and_builds_nothing(devstack: Devstack, tmp_path: Path) -> None:
    # --dry-run prints targets, tags and the cache flags Nexus needs, without building.
    result = release(devstack, tmp_path, "--dry-run", "--target", "api", FRACTALOPS_CACHE_BRANCH="feature/x")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    (api,) = plan["targets"]
    command = " ".join(api["command"])
    cache = f"127.0.0.1:{devstack.ports.hosted}/fractalops/buildcache"
    assert (
        f"--cache-to type=registry,ref={cache}:api-{cache_scope('feature/x')},mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true"
        in command
    )
    assert f"--cache-from type=registry,ref={cache}:api-{cache_scope('feature/x')}" in command
    assert f"--cache-from type=registry,ref={cache}:api-main" in command
    edits = api["values_edits"]
    assert edits["image.digest"]["to"] == "<digest of this build>"
    assert edits["image.digest"]["from"].startswith("sha256:")
    assert edits["image.repository"]["to"] == f"127.0.0.1:{devstack.ports.hosted}/yamonco/fractalops-api"
    assert events(tmp_path) == []


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never answers (a hung cache host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", ["stopped", "silent"])
def test_unreachable_cache_degrades_to_a_build_without_cache(
    devstack: Devstack, tmp_path: Path, silent_port: int, kind: str
) -> None:
    # With the cache registry stopped or silent, the release succeeds, prints image_refs and records 'unavailable'.
    port = _closed_port() if kind == "stopped" else silent_port
    topology = topology_with_cache_at(devstack, tmp_path, port)
    result = release(devstack, tmp_path, *tiny(tmp_path), topology=topology)
    assert result.returncode == 0, result.stderr[-3000:]
    refs = image_refs(result.stdout)
    assert len(refs) == 2
    for ref in refs:
        assert_in_registry(ref)
    assert result.stderr.count("warning: build cache unavailable") == 1
    recorded = events(tmp_path)
    assert [(e["cache_import"], e["cache_export"]) for e in recorded] == [("unavailable", "skipped")] * 2


def test_events_summary_reports_failure_rate_durations_and_cache_availability(
    devstack: Devstack, tmp_path: Path, silent_port: int
) -> None:
    # events summary reads the JSONL file the releases wrote.
    assert release(devstack, tmp_path, "--target", "api", *tiny(tmp_path)).returncode == 0
    topology = topology_with_cache_at(devstack, tmp_path, _closed_port())
    assert release(devstack, tmp_path, "--target", "api", *tiny(tmp_path), topology=topology).returncode == 0
    result = subprocess.run(
        [str(ROOT / ".venv/bin/fractalops-release"), "events", "summary", str(tmp_path / "events.jsonl"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["builds"] == 2
    assert summary["failure_rate"] == 0.0
    assert summary["cache_availability"] == 0.5
    assert summary["duration_p50_s"] > 0


def test_failing_events_sink_warns_and_the_release_succeeds(devstack: Devstack, tmp_path: Path) -> None:
    # A Build Plane Events sink that cannot be reached never fails the release; the JSONL file still has the events.
    result = release(
        devstack,
        tmp_path,
        "--target",
        "worker",
        *tiny(tmp_path),
        FRACTALOPS_BUILD_EVENTS_URL=f"http://127.0.0.1:{_closed_port()}/events",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(image_refs(result.stdout)) == 1
    assert (
        "warning: build events sink http://127.0.0.1:" in result.stderr and "did not take the events" in result.stderr
    )
    assert [e["target"] for e in events(tmp_path)] == ["worker"]


@pytest.fixture(params=[False, True], ids=["hangs-after-ping", "hangs-on-blobs"])
def hanging_registry(request: pytest.FixtureRequest) -> Iterator[HangingRegistry]:
    registry = HangingRegistry(answer_manifests=request.param).start()
    yield registry
    registry.close()


def test_cache_host_that_hangs_is_caught_by_the_probe_or_cut_off_at_the_deadline(
    devstack: Devstack, tmp_path: Path, hanging_registry: HangingRegistry
) -> None:
    # A host that hangs after the ping is caught by the probe (build without cache); one that hangs only on
    # blobs passes the probe, and its cache export, stalled after the push, is stopped at FRACTALOPS_CACHE_DEADLINE:
    # the release prints the pushed image_ref and records the export failed instead of hanging or failing.
    topology = topology_with_cache_at(devstack, tmp_path, hanging_registry.port)
    started = time.monotonic()
    result = release(
        devstack, tmp_path, "--target", "api", *tiny(tmp_path), topology=topology, FRACTALOPS_CACHE_DEADLINE="3"
    )
    elapsed = time.monotonic() - started
    recorded = events(tmp_path)
    if not hanging_registry.answer_manifests:
        assert result.returncode == 0, result.stderr[-3000:]
        (ref,) = image_refs(result.stdout)
        assert_in_registry(ref)
        assert "warning: build cache unavailable" in result.stderr and "timed out" in result.stderr
        assert [(e["cache_import"], e["cache_export"]) for e in recorded] == [("unavailable", "skipped")]
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        (ref,) = image_refs(result.stdout)
        assert_in_registry(ref)
        assert "warning: api: the cache export made no progress for 3 s" in result.stderr
        assert [(e["result"], e["cache_export"]) for e in recorded] == [("ok", "failed")]
        assert elapsed < 60, "the deadline bounds the wait; without it the build hangs until the host lets go"
    assert not [
        line
        for line in subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if str(tmp_path) in line
    ]


def test_bad_cache_deadline_is_a_usage_error(devstack: Devstack, tmp_path: Path) -> None:
    # FRACTALOPS_CACHE_DEADLINE must be a positive number of seconds.
    result = release(devstack, tmp_path, FRACTALOPS_CACHE_DEADLINE="soon")
    assert result.returncode == 2
    assert "FRACTALOPS_CACHE_DEADLINE='soon'" in result.stderr


def test_failed_target_exits_1_reports_it_and_still_prints_the_other(devstack: Devstack, tmp_path: Path) -> None:
    # A target whose build fails gives exit 1, a one-line error naming it, a failed event; the other target's image_ref is printed.
    targets_file = targets_with_context(tmp_path, "tests/integration/broken")
    result = release(devstack, tmp_path, "--targets-file", str(targets_file))
    assert result.returncode == 1
    (ref,) = image_refs(result.stdout)
    assert parse_pinned_ref(ref).path == "yamonco/fractalops-api"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: worker: build of target worker failed")
    assert "promotion preview" not in result.stderr
    recorded = {e["target"]: e for e in events(tmp_path)}
    assert recorded["worker"]["result"] == "failed" and recorded["worker"]["error"]
    assert recorded["api"]["result"] == "ok"


def test_cache_that_refuses_writes_is_a_miss_and_a_failed_export_never_a_failed_build(
    devstack: Devstack, tmp_path: Path
) -> None:
    # A cache that answers reads with 404 and writes with 403 (read-only Nexus): the release succeeds, export 'failed'.
    registry = HangingRegistry(reject_writes=True).start()
    try:
        topology = topology_with_cache_at(devstack, tmp_path, registry.port)
        result = release(devstack, tmp_path, "--target", "api", *tiny(tmp_path), topology=topology)
    finally:
        registry.close()
    assert result.returncode == 0, result.stderr[-3000:]
    (ref,) = image_refs(result.stdout)
    assert_in_registry(ref)
    assert [(e["result"], e["cache_export"]) for e in events(tmp_path)] == [("ok", "failed")]


def _alt_targets(tmp_path: Path, digest_key: str = "app.image.digest") -> Path:
    yaml = YAML()
    data = yaml.load((ROOT / "ops/containers/fractalops/targets.yaml").read_text())
    data["targets"]["api"]["context"] = TINY
    data["targets"]["api"]["values"] = {
        "file": "tests/integration/alt/values.yaml",
        "repository": "app.image.repository",
        "digest": digest_key,
        "revision": "app.image.source",
    }
    path = tmp_path / "targets.yaml"
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


def test_targets_file_decides_what_the_promotion_preview_edits(devstack: Devstack, tmp_path: Path) -> None:
    # With --targets-file, the smoke build's promotion preview edits that file's values keys, not the default ones.
    result = release(devstack, tmp_path, "--target", "api", "--targets-file", str(_alt_targets(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "+++ b/tests/integration/alt/values.yaml" in result.stderr
    assert "platform/k8s/apps/fractalops-api/values.yaml" not in result.stderr


def test_dry_run_with_a_missing_values_key_is_a_config_error(devstack: Devstack, tmp_path: Path) -> None:
    # A values key the targets file names but the values file lacks is exit 2, naming the file and key.
    result = release(
        devstack,
        tmp_path,
        "--dry-run",
        "--target",
        "api",
        "--targets-file",
        str(_alt_targets(tmp_path, "app.image.nosuchkey")),
    )
    assert result.returncode == 2
    assert "tests/integration/alt/values.yaml" in result.stderr and "nosuchkey" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("signum", "group", "code", "order"),
    [
        (signal.SIGINT, True, 130, "parallel"),
        (signal.SIGTERM, False, 143, "parallel"),
        (signal.SIGINT, None, 130, "parallel"),
        (signal.SIGTERM, False, 143, "sequential"),
    ],
    ids=["ctrl-c-to-the-process-group", "sigterm-to-the-driver-alone", "ctrl-c-held-down", "sigterm-sequential"],
)
def test_interrupt_stops_the_builds_records_them_as_interrupted_and_exits_130_or_143(
    devstack: Devstack, tmp_path: Path, signum: int, group: bool | None, code: int, order: str
) -> None:
    # Ctrl-C (SIGINT to the foreground process group), SIGTERM to the driver alone (a cancelled CI job), or an
    # impatient Ctrl-C held down while the builds are being stopped, mid-build: exit 130/143, no image_ref, one
    # 'interrupted' event per target (one that had not started yet too), no build process left behind.
    import threading

    from release.devstack.processes import pids_mentioning

    targets_file = targets_with_context(tmp_path, "tests/integration/slow")
    env = release_env(devstack, tmp_path, FRACTALOPS_PROGRESS="plain", FRACTALOPS_BUILD_ORDER=order)
    running = ("api", "worker") if order == "parallel" else ("api",)
    proc = subprocess.Popen(
        [str(RELEASE_SH), "--no-cache", "--targets-file", str(targets_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None and proc.stdout is not None
    lines: list[str] = []
    both_running = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if all(any(f"{name}: a long step" in seen for seen in lines) for name in running):
                both_running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert both_running.wait(120), "".join(lines[-20:])
    if group is None:
        for _ in range(40):  # Ctrl-C held down: more interrupts arrive while the driver stops the builds
            os.killpg(proc.pid, signum)
            time.sleep(0.01)
    elif group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    assert proc.wait(timeout=60) == code, "".join(lines[-20:])
    reader.join(10)
    assert proc.stdout.read() == ""
    assert any(line.startswith(("interrupted:", "terminated:")) for line in lines)
    recorded = {e["target"]: e for e in events(tmp_path)}
    results = {name: e["result"] for name, e in recorded.items()}
    assert results == {"api": "interrupted", "worker": "interrupted"}, (recorded, "".join(lines[-20:]))
    assert not pids_mentioning(str(ROOT / "tests/integration/slow"))


def test_uncommitted_build_context_is_labelled_and_never_promoted(devstack: Devstack, tmp_path: Path) -> None:
    # A smoke build of uncommitted files warns and labels its image; a promoting release of them is refused before
    # any build, and `promote` refuses the labelled image.
    import shutil

    context = ROOT / "tests/integration" / f"uncommitted-{uuid.uuid4().hex[:8]}"
    shutil.copytree(ROOT / TINY, context)
    try:
        targets_file = targets_with_context(tmp_path, str(context.relative_to(ROOT)))
        smoke = release(devstack, tmp_path, "--target", "api", "--targets-file", str(targets_file))
        assert smoke.returncode == 0, smoke.stderr[-3000:]
        assert (
            "warning: the build input is not the source commit (uncommitted: tests/integration/uncommitted-"
            in smoke.stderr
        )
        (ref,) = image_refs(smoke.stdout)
        pinned = parse_pinned_ref(ref)
        assert stack_client(pinned.registry).image_labels(pinned).get("io.fractalops.source.dirty") == "true"
        built = len(events(tmp_path))
        refused = release(
            devstack,
            tmp_path,
            "--target",
            "api",
            "--targets-file",
            str(targets_file),
            FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1",
        )
        assert refused.returncode == 1
        assert "error: the build input is not the source commit (uncommitted: " in refused.stderr
        assert len(events(tmp_path)) == built, "the refused release built nothing"
        promote = release(devstack, tmp_path, "promote", f"api={ref}", "--dry-run")
        assert promote.returncode == 1
        assert "built from uncommitted changes" in promote.stderr
    finally:
        shutil.rmtree(context)
