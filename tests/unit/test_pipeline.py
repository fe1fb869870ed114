"""The release pipeline end to end without docker: FakeBuildx, a registry stand-in over real HTTP, real git."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from fakes.buildx import Attempt, FakeBuildx
from gitops.conftest import StandInRegistry, git, registry  # noqa: F401 - `registry`: the fixture, by its name
from ruamel.yaml import YAML

from release.build.cache import classify
from release.build.inputs import ReleaseRequest
from release.build.pipeline import run_release
from release.build.progress import ProgressTracker
from release.build.report import Streams, TargetResult, step_summary
from release.errors import ConfigError, Terminated
from release.gitops.yamledit import read_values, replace_values
from release.settings import load
from release.targets import load_targets

PROJECT = Path(__file__).resolve().parents[2]
API_VALUES = "platform/k8s/apps/fractalops-api/values.yaml"
TRANSIENT = "ERROR: failed to push {tag}: unexpected status from PUT request: 502 Bad Gateway"


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    """An interrupted release leaves SIGINT and SIGTERM ignored (it is ending): put the handlers back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_topology(path: Path, image_registry: str, cache_port: int) -> Path:
    """A topology whose release registry is the stand-in and whose Nexus cache connector is on `cache_port`."""
    data = {
        "nexus": {
            "service": "nexus",
            "namespace": "nexus",
            "host": "127.0.0.1",
            "public_url": "http://127.0.0.1:9",
            "web_port": 9,
            "docker_group_port": 10,
            "docker_internal_port": cache_port,
        },
        "registry_cache": {
            "host_ip": "127.0.0.1",
            "buildcache_ref": f"127.0.0.1:{cache_port}/fractalops/buildcache",
            "docker_proxy_port": 10,
            "ghcr_proxy_port": 10,
        },
        "node_mirror": {"mode": "nodeport", "node_port": 30083, "pull_username": "shim-puller"},
        "release": {"image_registry": image_registry, "scheme": "http"},
    }
    path.write_text(json.dumps(data))
    return path


@dataclass
class World:
    """A repository of the test's own whose values files pin images of its first commit, in a registry stand-in."""

    root: Path
    registry: StandInRegistry
    topology: Path
    events: Path
    pinned: dict[str, str]  # target → digest pinned now

    def settings(self, **env: str) -> Any:
        """The settings of a person's smoke release here (outside CI, opted in), `env` on top."""
        environ = {
            "HOME": str(self.root.parent),
            "FRACTALOPS_REPO_ROOT": str(self.root),
            "FRACTALOPS_TOPOLOGY": str(self.topology),
            "FRACTALOPS_BUILD_EVENTS_FILE": str(self.events),
            "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1",
            "FRACTALOPS_PROGRESS": "plain",
            "FRACTALOPS_CACHE_DEADLINE": "0.5",
            **env,
        }
        return load(environ)

    def release(self, engine: FakeBuildx, streams: Streams, request: ReleaseRequest | None = None, **env: str) -> int:
        """Run the pipeline with the fake engine."""
        return run_release(request or ReleaseRequest(), self.settings(**env), streams, engine)

    def recorded(self) -> dict[str, dict[str, Any]]:
        """The Build Plane Events written, by target."""
        lines = self.events.read_text().splitlines() if self.events.exists() else []
        return {event["target"]: event for event in map(json.loads, lines)}


class Captured:
    """Streams that write into memory, and what was written."""

    def __init__(self) -> None:
        """Empty stdout and stderr."""
        self.out, self.err = io.StringIO(), io.StringIO()
        self.streams = Streams(self.out, self.err)


@pytest.fixture
def world(tmp_path: Path, registry: StandInRegistry) -> World:  # noqa: F811 - the fixture imported above
    """The world: a git repository (topology, targets, Dockerfile, values files) and the registry stand-in."""
    root = tmp_path / "repo"
    for part in ("ops/topology", "ops/containers/fractalops", "platform"):
        shutil.copytree(PROJECT / part, root / part)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "seed")
    seed = git(root, "rev-parse", "HEAD").strip()
    pinned = {}
    for name, target in load_targets(root / "ops/containers/fractalops/targets.yaml").items():
        keys = target.values.paths()
        path = root / target.values.file
        current = read_values(path.read_text(), list(keys.values()))
        pinned[name] = registry.add_image(f"yamonco/fractalops-{name}", seed, "seed")
        edits = {
            keys["repository"]: (current[keys["repository"]], f"{registry.host}/yamonco/fractalops-{name}"),
            keys["digest"]: (current[keys["digest"]], pinned[name]),
            keys["tag"]: (current[keys["tag"]], f"sha-{seed[:7]}"),
            keys["revision"]: (current[keys["revision"]], seed),
        }
        path.write_text(replace_values(path.read_text(), edits))
    git(root, "commit", "-q", "-am", "pin the seed images")
    port = int(registry.host.rsplit(":", 1)[1])
    topology = write_topology(tmp_path / "topology.yaml", registry.host, port)
    return World(root, registry, topology, tmp_path / "events" / "build-events.jsonl", pinned)


def image_refs(out: str) -> dict[str, str]:
    """target → image_ref from the `image_ref=` lines (the only lines stdout may hold)."""
    refs = {}
    for line in out.splitlines():
        assert line.startswith("image_ref="), out
        ref = line.removeprefix("image_ref=")
        refs[ref.split("/fractalops-", 1)[1].split("@", 1)[0]] = ref
    return refs


def test_a_smoke_release_prints_verified_image_refs_records_events_and_previews_the_promotion(world: World) -> None:
    # Both targets build (recorded progress), their pushed digests are confirmed in the registry, one event each,
    # and the promotion preview shows the real digests replacing the pinned ones while GitOps stays untouched.
    engine = FakeBuildx(world.registry, {name: [Attempt("api-cold-miss.rawjson")] for name in ("api", "worker")})
    output = Captured()
    head = git(world.root, "rev-parse", "HEAD").strip()
    assert world.release(engine, output.streams) == 0
    refs = image_refs(output.out.getvalue())
    assert set(refs) == {"api", "worker"}
    events = world.recorded()
    assert {name: (e["result"], e["cache_import"], e["cache_export"]) for name, e in events.items()} == {
        "api": ("ok", "miss", "ok"),
        "worker": ("ok", "miss", "ok"),
    }
    assert events["api"]["image_ref"] == refs["api"] and events["api"]["builder"] == "fake-builder"
    err = output.err.getvalue()
    assert f"release: api, worker from {head} on builder fake-builder; cache at 127.0.0.1:" in err
    assert "promotion preview (smoke build: GitOps untouched" in err
    assert f"-  digest: {world.pinned['api']}" in err
    assert f"+  digest: {refs['api'].rsplit('@', 1)[1]}" in err
    assert "+++ b/platform/k8s/apps/fractalops-worker/values.yaml" in err
    assert git(world.root, "status", "--porcelain") == "" and git(world.root, "rev-parse", "HEAD").strip() == head
    (api_request, *_) = [r for r in engine.requests if r.name == "api"]
    assert api_request.cache_from and api_request.cache_to
    assert api_request.labels["org.opencontainers.image.revision"] == head


def test_a_dry_run_prints_the_plan_and_asks_the_engine_nothing(world: World) -> None:
    # --dry-run prints the plan with the values edits it would make; the engine is neither asked nor used.
    engine = FakeBuildx(world.registry, {})
    output = Captured()
    assert world.release(engine, output.streams, ReleaseRequest(targets=("api",), dry_run=True)) == 0
    plan = json.loads(output.out.getvalue())
    (api,) = plan["targets"]
    assert api["values_edits"]["image.digest"] == {"from": world.pinned["api"], "to": "<digest of this build>"}
    assert api["command"][:3] == ["docker", "buildx", "build"] and "--target" in api["command"]
    assert engine.preflights == [] and engine.requests == []
    assert world.recorded() == {}


def test_a_builder_the_engine_does_not_know_stops_the_release_before_any_build(world: World) -> None:
    # The engine's preflight refusal ends the release (exit 2 for a configuration error); nothing is built or recorded.
    engine = FakeBuildx(world.registry, {}, unknown_builder=True)
    with pytest.raises(ConfigError, match="no builder 'nosuch' found"):
        world.release(engine, Captured().streams, FRACTALOPS_BUILDER="nosuch")
    assert engine.requests == [] and world.recorded() == {}


def test_a_transient_registry_error_is_built_once_more(world: World) -> None:
    # A 502 from the registry during the push is worth one more (cached) build; the second attempt's progress counts.
    tag = "127.0.0.1/yamonco/fractalops-api:sha-x"
    script = {
        "api": [
            Attempt("api-cold-miss.rawjson", push=False, fail=TRANSIENT.format(tag=tag)),
            Attempt("api-warm-hit.rawjson"),
        ],
        "worker": [Attempt("api-cold-miss.rawjson")],
    }
    engine = FakeBuildx(world.registry, script)
    output = Captured()
    assert world.release(engine, output.streams) == 0
    assert [r.name for r in engine.requests].count("api") == 2
    assert "warning: api: registry answered with a server error; building once more" in output.err.getvalue()
    api = world.recorded()["api"]
    assert (api["result"], api["cache_import"], api["cache_hit_ratio"]) == ("ok", "hit", 1.0)
    assert set(image_refs(output.out.getvalue())) == {"api", "worker"}


def test_targets_build_one_after_another_unless_the_build_order_is_parallel(world: World) -> None:
    # The default order is sequential (BuildKit can drop a shared stage's step from a cache export when targets
    # build at once): worker starts only once api's cache export has ended, so a build without one (here its step
    # left out) is waited for to its end, while after an export api's push overlaps worker's start. `parallel` runs
    # them side by side: api waits for worker's build to end, so both are under way.
    export = "exporting cache to registry"
    script = {
        "api": [Attempt("api-cold-miss.rawjson", hold=0.5, drop=export)],
        "worker": [Attempt("api-cold-miss.rawjson")],
    }
    engine = FakeBuildx(world.registry, script)
    assert world.release(engine, Captured().streams) == 0
    assert engine.most_at_once == 1 and [r.name for r in engine.requests] == ["api", "worker"]
    script = {"api": [Attempt("api-cold-miss.rawjson", hold=0.5)], "worker": [Attempt("api-cold-miss.rawjson")]}
    engine = FakeBuildx(world.registry, script)
    assert world.release(engine, Captured().streams) == 0
    assert engine.most_at_once == 2 and [r.name for r in engine.requests] == ["api", "worker"]
    script = {"api": [Attempt("api-cold-miss.rawjson", after="worker")], "worker": [Attempt("api-cold-miss.rawjson")]}
    engine = FakeBuildx(world.registry, script)
    output = Captured()
    assert world.release(engine, output.streams, FRACTALOPS_BUILD_ORDER="parallel") == 0
    assert engine.most_at_once == 2 and set(image_refs(output.out.getvalue())) == {"api", "worker"}
    plan = Captured()
    assert world.release(engine, plan.streams, ReleaseRequest(dry_run=True)) == 0
    assert json.loads(plan.out.getvalue())["build_order"] == "sequential"


def test_a_cache_unavailable_n_releases_in_a_row_is_said_loudly_and_a_hit_resets_the_count(
    world: World, tmp_path: Path
) -> None:
    # The third release in a row that finds the cache unavailable warns, annotates (::warning::) and adds a line to
    # the step summary, for each target; the first two say nothing of it, and a release with a hit starts over.
    summary = tmp_path / "summary.md"
    env = {
        "FRACTALOPS_CACHE_UNAVAILABLE_WARN_AFTER": "3",
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
    }

    def release(recording: str) -> str:
        engine = FakeBuildx(world.registry, {name: [Attempt(recording)] for name in ("api", "worker")})
        output = Captured()
        assert world.release(engine, output.streams, **env) == 0
        return output.err.getvalue()

    quiet = [release("api-cache-refused.rawjson") for _ in range(2)]
    assert not [line for err in quiet for line in err.splitlines() if "releases in a row" in line]
    loud = release("api-cache-refused.rawjson").splitlines()
    warned = [line for line in loud if line.startswith("warning: ") and "in the last 3 releases in a row" in line]
    assert [line.split(":")[1].strip() for line in warned] == ["api", "worker"]
    annotations = [line for line in loud if line.startswith("::warning title=Build cache unavailable::")]
    assert len(annotations) == 2 and "in the last 3 releases in a row" in annotations[0]
    assert summary.read_text().count("> **Warning:** ") == 2
    release("api-warm-hit.rawjson")
    again = release("api-cache-refused.rawjson")
    assert "releases in a row" not in again
    assert summary.read_text().count("> **Warning:** ") == 2


def test_a_failed_build_is_not_retried_fails_its_target_and_leaves_the_other(world: World) -> None:
    # A build that fails for its own reasons is built once: exit 1, its error on one line, no preview, the other target printed.
    script = {
        "api": [Attempt("api-cold-miss.rawjson")],
        "worker": [
            Attempt("worker-step-fails.rawjson", push=False, fail="ERROR: failed to solve: exit code: 3"),
            Attempt("api-cold-miss.rawjson"),
        ],
    }
    engine = FakeBuildx(world.registry, script)
    output = Captured()
    assert world.release(engine, output.streams) == 1
    assert [r.name for r in engine.requests].count("worker") == 1
    assert set(image_refs(output.out.getvalue())) == {"api"}
    errors = [line for line in output.err.getvalue().splitlines() if line.startswith("error: ")]
    assert errors == ["error: worker: build of target worker failed: ERROR: failed to solve: exit code: 3"]
    assert "promotion preview" not in output.err.getvalue()
    worker = world.recorded()["worker"]
    assert (worker["result"], worker["cache_export"]) == ("failed", "skipped")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)], ids=["ctrl-c", "sigterm"]
)
def test_an_interrupt_stops_the_builds_and_records_the_stopped_ones_interrupted(
    world: World, signum: int, raised: type[BaseException]
) -> None:
    # Ctrl-C or SIGTERM mid-build: the engine stops every build, a build that ended by it is `interrupted` (not
    # `failed`), one that had finished stays `ok`, both are recorded, no image_ref is printed, the interrupt goes on.
    signal.signal(signal.SIGTERM, _terminate)  # as the CLI does: SIGTERM ends a run the way Ctrl-C does
    script = {"api": [Attempt("api-cold-miss.rawjson")], "worker": [Attempt(interrupt=signum, after="api", push=False)]}
    engine = FakeBuildx(world.registry, script)
    output = Captured()
    with pytest.raises(raised):
        world.release(engine, output.streams)
    assert engine.stopped.is_set()
    events = world.recorded()
    assert events["api"]["result"] == "ok"
    assert events["worker"]["result"] == "interrupted"
    assert events["worker"]["error"].startswith("interrupted (the build stopped: build of target worker was stopped")
    assert output.out.getvalue() == ""


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [
        (Attempt("api-warm-hit.rawjson"), ("ok", "hit", "ok")),
        (Attempt("api-cold-miss.rawjson"), ("ok", "miss", "ok")),
        (Attempt("api-cache-refused.rawjson"), ("ok", "unavailable", "failed")),
        (Attempt("api-export-refused.rawjson"), ("ok", "miss", "failed")),
        (
            Attempt("worker-step-fails.rawjson", push=False, fail="ERROR: failed to solve"),
            ("failed", "miss", "skipped"),
        ),
        (Attempt("api-cold-miss.rawjson", hang="exporting cache to registry"), ("ok", "miss", "failed")),
        (Attempt(push=False, hang="importing cache manifest from 127.0.0.1/x"), ("failed", "unavailable", "failed")),
    ],
    ids=["hit", "miss", "cache-refused", "export-refused", "build-failed", "export-cut-after-push", "import-cut"],
)
def test_each_build_records_its_cache_outcome(world: World, attempt: Attempt, outcome: tuple[str, str, str]) -> None:
    # The cache import (hit/miss/unavailable) and export (ok/failed/skipped) come from the build's own progress, or
    # from a cache step the deadline cut: an export cut after the push keeps the pushed, verified image.
    engine = FakeBuildx(world.registry, {"api": [attempt]})
    output = Captured()
    code = world.release(engine, output.streams, ReleaseRequest(targets=("api",)))
    api = world.recorded()["api"]
    assert (api["result"], api["cache_import"], api["cache_export"]) == outcome
    assert code == (0 if outcome[0] == "ok" else 1)
    refs = image_refs(output.out.getvalue())
    assert (api["image_ref"] is not None) == (outcome[0] == "ok") == ("api" in refs)
    if attempt.hang == "exporting cache to registry":
        assert "warning: api: the cache export made no progress for 0.5 s" in output.err.getvalue()
    if attempt.hang and attempt.hang.startswith("importing"):
        assert "before its image was built" in api["error"]


def test_once_the_deadline_cut_a_cache_step_the_later_targets_build_without_cache(world: World) -> None:
    # Sequential builds: api's export is cut at the deadline; worker, which starts afterwards, gets no cache flags
    # (a second cut would cost the release the deadline again), and says so; both images are released.
    script = {
        "api": [Attempt("api-cold-miss.rawjson", hang="exporting cache to registry")],
        "worker": [Attempt("api-cold-miss.rawjson")],
    }
    engine = FakeBuildx(world.registry, script)
    output = Captured()
    assert world.release(engine, output.streams, ReleaseRequest()) == 0, output.err.getvalue()
    api, worker = engine.requests
    assert api.cache_to is not None and worker.cache_from == () and worker.cache_to is None
    recorded = world.recorded()
    assert (recorded["api"]["cache_import"], recorded["api"]["cache_export"]) == ("miss", "failed")
    assert (recorded["worker"]["cache_import"], recorded["worker"]["cache_export"]) == ("unavailable", "skipped")
    assert "warning: worker: building without cache this run: the deadline cut api" in output.err.getvalue()
    assert set(image_refs(output.out.getvalue())) == {"api", "worker"}


@pytest.mark.parametrize("how", ["no-cache", "probe-fails"])
def test_a_build_without_the_cache_records_it_disabled_or_unavailable_and_passes_no_cache_flags(
    world: World, tmp_path: Path, how: str
) -> None:
    # --no-cache, or a cache host the 2 s probe cannot reach, builds without cache flags: import disabled/unavailable,
    # export skipped; an unreachable cache is a warning, never a failed release.
    if how == "probe-fails":
        write_topology(world.topology, world.registry.host, closed_port())
    engine = FakeBuildx(world.registry, {"api": [Attempt("api-cold-miss.rawjson")]})
    output = Captured()
    request = ReleaseRequest(targets=("api",), use_cache=how != "no-cache")
    assert world.release(engine, output.streams, request) == 0
    (built,) = engine.requests
    assert built.cache_from == () and built.cache_to is None
    api = world.recorded()["api"]
    expected = "disabled" if how == "no-cache" else "unavailable"
    assert (api["cache_import"], api["cache_export"]) == (expected, "skipped")
    assert ("warning: build cache unavailable" in output.err.getvalue()) == (how == "probe-fails")


def test_cache_outcome_of_a_build_the_probe_kept_off_the_cache_is_the_probes() -> None:
    # Whatever the progress shows, a build the probe kept off the cache reports the probe's reason and no export.
    tracker = ProgressTracker(prefix="[api]", echo=lambda line: None)
    assert classify("unavailable", None, tracker, built=True) == ("unavailable", "skipped")
    assert classify("disabled", "exporting cache to registry", tracker, built=False) == ("disabled", "skipped")


def test_a_promoting_release_commits_pushes_and_records_beside_the_events(world: World, tmp_path: Path) -> None:
    # With GitOps updates on, the built images are pinned in one pushed commit and the release record is appended
    # beside this run's events file; --json carries the record.
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(world.root), str(remote))
    git(world.root, "remote", "add", "origin", str(remote))
    git(world.root, "fetch", "-q", "origin")
    git(world.root, "branch", "-q", "--set-upstream-to=origin/main")
    script = {name: [Attempt("api-warm-hit.rawjson")] for name in ("api", "worker")}
    engine = FakeBuildx(world.registry, script)
    output = Captured()
    code = world.release(
        engine, output.streams, ReleaseRequest(json_output=True), FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1"
    )
    assert code == 0, output.err.getvalue()
    document = json.loads(output.out.getvalue())
    built = {t["target"]: t["image_ref"] for t in document["targets"]}
    pinned = git(remote, "show", f"main:{API_VALUES}")
    assert built["api"].rsplit("@", 1)[1] in pinned
    records = (world.events.parent / "releases.jsonl").read_text().splitlines()
    assert [json.loads(line)["commit"] for line in records] == [document["gitops"]["commit"]]
    assert document["gitops"]["commit"] == git(remote, "rev-parse", "main").strip()


def test_the_targets_file_names_the_stage_and_refuses_the_old_key(tmp_path: Path) -> None:
    # `stage:` is the Dockerfile stage a target builds; the old `target:` key is an unknown key, not a silent alias.
    text = (PROJECT / "ops/containers/fractalops/targets.yaml").read_text()
    assert {t.stage for t in load_targets(PROJECT / "ops/containers/fractalops/targets.yaml").values()} == {
        "api",
        "worker",
    }
    old = tmp_path / "targets.yaml"
    old.write_text(text.replace("    stage: api", "    target: api"))
    with pytest.raises(
        ConfigError, match=r"targets\.api\.target: .api.: unknown key; the Dockerfile stage is `stage:`"
    ):
        load_targets(old)
    assert YAML(typ="safe").load(text)["targets"]["api"]["stage"] == "api"


def test_a_failed_targets_error_stays_in_its_step_summary_cell() -> None:
    # buildx's last words can hold pipes, new lines and markup: the summary row keeps its four cells, shown as typed.
    failed = TargetResult("api", None, 1.0, "failed", "ERROR: a | b\n<b>x</b> `y`", "miss", "skipped", None)
    (row,) = [line for line in step_summary([failed], "t").splitlines() if line.startswith("| api |")]
    assert row.replace("\\|", "").count("|") == 5
    assert "failed: ERROR: a \\| b \\<b\\>x\\</b\\> \\`y\\`" in row
