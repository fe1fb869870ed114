"""Benchmarks in the cluster shape: runners, the shared builder and Nexus by its service name, on the real images.

Run: `.venv/bin/python bench/cluster_bench.py [section ...]` (root; brings the cluster shape up and takes it down).
Results: bench/results/cluster.json. Every release and plain buildx command runs on a runner through
`devstack exec`, so both pay the same few hundred milliseconds of `exec` start-up.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results/cluster.json"
RELEASE_SH = "./ops/containers/fractalops/release.sh"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
STATE = Path(os.environ.get("BENCH_CLUSTER_DIR", "/tmp/fractalops-bench-cluster"))
PORT_BASE = int(os.environ.get("BENCH_CLUSTER_PORT_BASE", "35680"))
CONTEXT = os.environ.get("BENCH_CONTEXT", "ops/containers/fractalops")  # the real api and worker images
PYTHON = ROOT / ".venv/bin/python" if (ROOT / ".venv/bin/python").exists() else Path(sys.executable)
RUNNERS = ("runner-1", "runner-2")
CONTAINER_BUILDER = "bench-container"  # a runner's docker-container builder (setup-buildx-action's default driver)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


class Cluster:
    """The cluster shape of the bench's own state folder, and helpers to run things on its hosts."""

    def __init__(self) -> None:
        """Bring the shape up; releases build `CONTEXT` through a targets file of the bench's own."""
        from release.devstack.cluster.hosts import ClusterNet

        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "PYTHONDONTWRITEBYTECODE"}
        }
        self.env.update({"FRACTALOPS_DEVSTACK_DIR": str(STATE), "FRACTALOPS_DEVSTACK_PORT_BASE": str(PORT_BASE)})
        self.net = ClusterNet(PORT_BASE)
        self.work = STATE.parent / f"{STATE.name}-work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.targets = self._targets_file()
        self.cli("devstack", "up", "--shape", "cluster", timeout=3600)

    def _targets_file(self) -> Path:
        """The targets file with every target building from `CONTEXT`."""
        from ruamel.yaml import YAML

        yaml = YAML()
        data = yaml.load((ROOT / "ops/containers/fractalops/targets.yaml").read_text())
        for target in data["targets"].values():
            target["context"] = CONTEXT
        path = self.work / "targets.yaml"
        with path.open("w") as handle:
            yaml.dump(data, handle)
        return path

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 1800, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`fractalops-release ARGS` from the checkout (with `env` over the bench's environment)."""
        proc = subprocess.run(
            [str(PYTHON), "-m", "release", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise SystemExit(f"{' '.join(args[:4])}: exit {proc.returncode}: {proc.stderr[-3000:]}")
        return proc

    def on(self, host: str, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on a host of the shape (with `env` over the bench's environment)."""
        return self.cli("devstack", "exec", "--host", host, "--", *command, env=env)

    def prune(self, runner: str, builder: str | None = None) -> None:
        """Empty a runner's builder, and with its own engine's builder the engine's images too (a fresh runner)."""
        if builder is None:  # the engine's image store keeps layers the build cache no longer names
            self.on(runner, "docker", "system", "prune", "-af")
        self.on(runner, "docker", "buildx", "prune", "-af", *(["--builder", builder] if builder else []))

    def container_builder(self, runner: str, prune_engine: bool = False) -> tuple[float, int]:
        """Remove the runner's docker-container builder (its container and state volume) and create it again, empty.

        With `prune_engine` the engine's images go first (the BuildKit image too, pulled again: a fresh runner).
        (seconds, bytes over the runner's link) of `builder create`.
        """
        self.on(runner, "sh", "-c", f"docker buildx rm {CONTAINER_BUILDER} 2>/dev/null || true")
        if prune_engine:
            self.on(runner, "docker", "system", "prune", "-af")
        before, started = self.link_bytes(runner), time.perf_counter()
        self.on(runner, "python", "-m", "release", "builder", "create", "--driver", "docker-container",
                "--name", CONTAINER_BUILDER)  # fmt: skip
        return time.perf_counter() - started, self.link_bytes(runner) - before

    def release_env(self, scope: str, events: Path, builder: str | None = None) -> dict[str, str]:
        """A smoke release's settings: this bench's targets, its own cache scope and events file."""
        env = {
            "FRACTALOPS_TARGETS": str(self.targets),
            "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1",
            "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS": "0",
            "FRACTALOPS_CACHE_BRANCH": scope,
            "FRACTALOPS_BUILD_EVENTS_FILE": str(events),
        }
        return {**env, "FRACTALOPS_BUILDER": builder} if builder else env

    def release(
        self, runner: str, scope: str, builder: str | None = None, reuse: str = "promote"
    ) -> tuple[float, dict[str, Any]]:
        """Time a smoke release on a runner; (seconds, its --json document)."""
        events = self.work / f"{runner}-{uuid.uuid4().hex[:6]}.jsonl"
        started = time.perf_counter()
        env = {**self.release_env(scope, events, builder), "FRACTALOPS_REUSE": reuse}
        proc = self.on(runner, RELEASE_SH, "--json", env=env)
        return time.perf_counter() - started, json.loads(proc.stdout)

    def plain_commands(self, runner: str, scope: str, builder: str | None = None) -> list[list[str]]:
        """The plain buildx commands the release would run on that runner (its dry-run plan)."""
        events = self.work / "dry-run.jsonl"
        proc = self.on(runner, RELEASE_SH, "--dry-run", env=self.release_env(scope, events, builder))
        plan = json.loads(proc.stdout)
        commands = []
        for target in plan["targets"]:
            argv = [a.replace("--progress=rawjson", "--progress=plain") for a in target["command"]]
            argv[argv.index("--metadata-file") + 1] = f"/tmp/fractalops-bench-{target['name']}.metadata.json"
            commands.append(argv)
        return commands

    def buildx_plugin(self, runner: str) -> str:
        """The buildx plugin binary the runner's docker runs for `docker buildx` (from `docker info`)."""
        proc = self.on(runner, "docker", "info", "--format", "{{json .ClientInfo.Plugins}}")
        plugins = json.loads(proc.stdout)
        return next(p["Path"] for p in plugins if p.get("Name") == "buildx")

    def plain(self, runner: str, commands: list[list[str]]) -> float:
        """Time the plain buildx commands on a runner, one after another (the driver's default order)."""
        started = time.perf_counter()
        for argv in commands:
            self.on(runner, *argv)
        return time.perf_counter() - started

    def link_bytes(self, host: str) -> int:
        """Bytes both ways so far over a host's link (the hub's end of it)."""
        shown = subprocess.run(
            ["ip", "-n", self.net.hub, "-s", "-j", "link", "show", self.net.host(host).hub_link],
            capture_output=True,
            text=True,
            check=True,
        )
        stats = json.loads(shown.stdout)[0]["stats64"]
        return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])

    def image_bytes(self, image_refs: list[str]) -> int:
        """Compressed layer bytes of the released images, as the hosted connector stores them."""
        from release.adapters.registry import RegistryClient, basic_auth
        from release.devstack.cluster.credentials import read_credentials
        from release.devstack.cluster.paths import ClusterPaths
        from release.devstack.paths import StackPaths
        from release.fsutil import write_atomic
        from release.imageref import parse_pinned_ref

        credentials = read_credentials(ClusterPaths(StackPaths(STATE)).secrets)
        assert credentials is not None
        hosted = f"{self.net.host('nexus').address}:8082"  # the root namespace cannot resolve the service name
        token = basic_auth(credentials.username, credentials.password).removeprefix("Basic ")
        config = self.work / "docker-config"
        config.mkdir(mode=0o700, exist_ok=True)
        write_atomic(config / "config.json", json.dumps({"auths": {hosted: {"auth": token}}}).encode(), mode=0o600)
        client = RegistryClient(hosted, scheme="http", docker_config=config)
        return sum(client.layer_bytes(parse_pinned_ref(ref)) for ref in image_refs)


def hit_ratios(document: dict[str, Any]) -> list[float | None]:
    """Each target's cache hit ratio in a --json document."""
    return [t["cache_hit_ratio"] for t in document["targets"]]


def refs(document: dict[str, Any]) -> list[str]:
    """The image refs of a --json document."""
    return [t["image_ref"] for t in document["targets"] if t["image_ref"]]


def warm_vs_cold(
    cold: list[float],
    warm: list[float],
    ratios: list[float | None],
    plain: tuple[list[float], list[float]] | None = None,
) -> dict[str, Any]:
    """A fresh runner's figures: warm from the registry cache alone vs cold; `plain` (cold, warm): plain buildx's."""
    ratio = median(warm) / median(cold)
    figures: dict[str, Any] = {
        "cold_s": median(cold),
        "warm_from_registry_s": median(warm),
        "ratio": round(ratio, 3),
        "hit_ratios": ratios,
    }
    if plain is not None:
        plain_cold, plain_warm = plain
        figures |= {
            "plain_buildx_cold_s": median(plain_cold),
            "plain_buildx_warm_from_registry_s": median(plain_warm),
            "plain_ratio": round(median(plain_warm) / median(plain_cold), 3),
            "driver_vs_plain_cold": round(median(cold) / median(plain_cold), 3),
            "driver_vs_plain_warm": round(median(warm) / median(plain_warm), 3),
        }
    return {**figures, "target": "<= 0.25 and every step CACHED", "ok": ratio <= 0.25 and all(r == 1.0 for r in ratios)}


def bench_fresh_runner(c: Cluster) -> dict[str, Any]:
    """A fresh runner (empty builder) warm from the registry cache alone vs cold; plain buildx beside each."""
    cold, warm, plain_cold, plain_warm, ratios = [], [], [], [], []
    for _ in range(REPEATS):
        scope = f"bench-{uuid.uuid4().hex[:6]}"
        c.prune("runner-1")
        cold.append(c.release("runner-1", scope)[0])
        c.prune("runner-2")
        seconds, document = c.release("runner-2", scope)
        warm.append(seconds)
        ratios += hit_ratios(document)
        plain_scope = f"bench-{uuid.uuid4().hex[:6]}"
        c.prune("runner-1")
        plain_cold.append(c.plain("runner-1", c.plain_commands("runner-1", plain_scope)))
        c.prune("runner-2")
        plain_warm.append(c.plain("runner-2", c.plain_commands("runner-2", plain_scope)))
    return warm_vs_cold(cold, warm, ratios, (plain_cold, plain_warm))


def bench_fresh_shared_builder(c: Cluster) -> dict[str, Any]:
    """The same through the recommended builder: the shared BuildKit emptied before each release (cache alone)."""
    cold, warm, ratios = [], [], []
    for _ in range(REPEATS):
        scope = f"bench-{uuid.uuid4().hex[:6]}"
        c.prune("runner-1", builder="shared")
        cold.append(c.release("runner-1", scope, builder="shared")[0])
        c.prune("runner-2", builder="shared")
        seconds, document = c.release("runner-2", scope, builder="shared")
        warm.append(seconds)
        ratios += hit_ratios(document)
    return warm_vs_cold(cold, warm, ratios)


def bench_fresh_container_builder(c: Cluster) -> dict[str, Any]:
    """A fresh runner's own docker-container builder (created empty) warm from the registry cache alone vs cold.

    What setup-buildx-action gives a GitHub job: a new BuildKit container on the runner's engine. Plain buildx with
    the same flags beside each; the bytes over runner-2's link during each no-change release, against the images'.
    """
    b = CONTAINER_BUILDER
    cold, warm, plain_cold, plain_warm, ratios, moved, creates, create_bytes = [], [], [], [], [], [], [], []
    image = 0
    for _ in range(REPEATS):
        scope = f"bench-{uuid.uuid4().hex[:6]}"
        c.container_builder("runner-1")
        seconds, document = c.release("runner-1", scope, builder=b)
        cold.append(seconds)
        image = c.image_bytes(refs(document))
        created = c.container_builder("runner-2", prune_engine=True)
        creates.append(created[0])
        create_bytes.append(created[1])
        before = c.link_bytes("runner-2")
        seconds, document = c.release("runner-2", scope, builder=b)
        moved.append(c.link_bytes("runner-2") - before)
        warm.append(seconds)
        ratios += hit_ratios(document)
        plain_scope = f"bench-{uuid.uuid4().hex[:6]}"
        c.container_builder("runner-1")
        plain_cold.append(c.plain("runner-1", c.plain_commands("runner-1", plain_scope, builder=b)))
        c.container_builder("runner-2", prune_engine=True)
        plain_warm.append(c.plain("runner-2", c.plain_commands("runner-2", plain_scope, builder=b)))
    bytes_moved = int(statistics.median(moved))
    return {
        "builder": f"docker-container, {b}: moby/buildkit:buildx-stable-1 from the docker-group (made offline)",
        **warm_vs_cold(cold, warm, ratios, (plain_cold, plain_warm)),
        "builder_create_s": median(creates),
        "builder_create_bytes": int(statistics.median(create_bytes)),
        "image_bytes": image,
        "warm_release_bytes": bytes_moved,
        "warm_release_bytes_each": moved,
        "warm_release_percent_of_image": round(100 * bytes_moved / image, 2),
    }


def bench_two_runners(c: Cluster) -> dict[str, Any]:
    """Both runners, builders emptied, release at once into one cache that runner-1 filled: both succeed and hit."""
    scope = f"bench-{uuid.uuid4().hex[:6]}"
    c.prune("runner-1")
    alone = c.release("runner-1", scope)[0]
    for runner in RUNNERS:
        c.prune(runner)
    results: dict[str, tuple[float, dict[str, Any]]] = {}

    def run(runner: str) -> None:
        results[runner] = c.release(runner, scope)

    threads = [threading.Thread(target=run, args=(r,)) for r in RUNNERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ratios = {r: hit_ratios(results[r][1]) for r in RUNNERS if r in results}
    ok = set(results) == set(RUNNERS) and all(x is not None and x >= 0.9 for v in ratios.values() for x in v)
    return {
        "cold_s": round(alone, 3),
        "at_once_s": {r: round(results[r][0], 3) for r in results},
        "hit_ratios": ratios,
        "target": "both succeed, both hit (>= 0.9)",
        "ok": ok,
    }


def bench_shared_builder(c: Cluster) -> dict[str, Any]:
    """runner-2 through the shared builder after runner-1 used it, vs runner-2 warm from the registry cache alone."""
    shared, registry, ratios = [], [], []
    for _ in range(REPEATS):
        scope = f"bench-{uuid.uuid4().hex[:6]}"
        c.release("runner-1", scope, builder="shared")
        seconds, document = c.release("runner-2", scope, builder="shared")
        shared.append(seconds)
        ratios += hit_ratios(document)
        c.prune("runner-2")
        registry.append(c.release("runner-2", scope)[0])
    ratio = median(shared) / median(registry)
    return {
        "shared_builder_s": median(shared),
        "warm_from_registry_s": median(registry),
        "ratio": round(ratio, 3),
        "hit_ratios": ratios,
        "target": "<= 1.0",
        "ok": ratio <= 1.0,
    }


def bench_bytes(c: Cluster) -> dict[str, Any]:
    """Bytes over runner-2's link for a no-change release: its own engine (docker driver, emptied) vs the shared one."""
    scope = f"bench-{uuid.uuid4().hex[:6]}"
    _, document = c.release("runner-1", scope)
    c.release("runner-1", scope, builder="shared")
    image = c.image_bytes(refs(document))
    moved: dict[str, Any] = {}
    for name, builder in (("docker_driver_fresh", None), ("shared_buildkitd", "shared")):
        if builder is None:
            c.prune("runner-2")
        before = c.link_bytes("runner-2")
        seconds, done = c.release("runner-2", scope, builder=builder)
        count = c.link_bytes("runner-2") - before
        moved[name] = {
            "bytes": count,
            "percent_of_image": round(100 * count / image, 2),
            "seconds": round(seconds, 3),
            "hit_ratios": hit_ratios(done),
        }
    return {
        "image_bytes": image,
        **moved,
        "target": "<= 1 % of the image's bytes with the recommended builder (shared buildkitd)",
        "ok": moved["shared_buildkitd"]["percent_of_image"] <= 1.0,
    }


def bench_shaped_link(c: Cluster) -> dict[str, Any]:
    """runner-2's link at 5 MB/s: a cold release into a new cache exports over it and succeeds, however long."""
    rate = os.environ.get("BENCH_LINK_RATE", "5mbps")
    scope = f"bench-{uuid.uuid4().hex[:6]}"
    c.prune("runner-2")
    c.cli("devstack", "link", "--host", "runner-2", "--rate", rate)
    try:
        seconds, document = c.release("runner-2", scope)
    finally:
        c.cli("devstack", "link", "--host", "runner-2", "--clear", check=False)
    exports = [t["cache_export"] for t in document["targets"]]
    return {
        "rate": rate,
        "cold_release_s": round(seconds, 3),
        "cache_exports": exports,
        "image_bytes": c.image_bytes(refs(document)),
        "target": "the release succeeds with its cache export",
        "ok": exports == ["ok"] * len(exports),
    }


WARM_REPEATS = int(os.environ.get("BENCH_WARM_REPEATS", "9"))


def bench_overhead(c: Cluster, builder: str | None = None, reuse: str = "promote") -> dict[str, Any]:
    """The warm release on a runner (nothing changed since its last release): the driver vs plain buildx, alternated.

    Both are timed inside the runner (bench/timed.py), so reaching the host (`devstack exec`) counts on neither side.
    The target ratio is against `docker buildx build` as a user types it; the driver runs the buildx plugin binary
    itself (no docker CLI dispatch), so the same commands run that way are timed too (`ratio_vs_direct_buildx`).
    `builder`: the runner's docker-container builder (made empty first), else the engine's own (docker driver).
    `reuse`: FRACTALOPS_REUSE of the driver's releases (`promote`, the default, builds every smoke release; `always`
    takes the image at the tag when its inputs are unchanged, which a warm release's are).
    """
    scope = f"bench-{uuid.uuid4().hex[:6]}"
    events = c.work / f"overhead-{scope}.jsonl"
    if builder is not None:
        c.container_builder("runner-1")
    env = {**c.release_env(scope, events, builder), "FRACTALOPS_REUSE": reuse}
    driver_argv = [RELEASE_SH, "--json"]
    # Plain buildx pushes beside the release's tag, not over it: over it, the driver would find at its tag an image
    # without its inputs label, and build (as it must) instead of measuring what it does after its own release.
    plain_argvs = [
        [f"{arg}-plain" if i and argv[i - 1] == "--tag" else arg for i, arg in enumerate(argv)]
        for argv in c.plain_commands("runner-1", scope, builder)
    ]
    plugin = c.buildx_plugin("runner-1")
    direct_argvs = [[plugin, *argv[2:]] for argv in plain_argvs]  # `docker buildx build …` → `<plugin> build …`
    c.release("runner-1", scope, builder)  # cold: fills the builder and the cache
    _, warm = c.release("runner-1", scope, builder, reuse=reuse)  # the first warm one, not counted
    reused = [t["reused"] for t in warm["targets"]]

    def timed(commands: list[list[str]]) -> float:
        proc = c.on("runner-1", str(PYTHON), "bench/timed.py", json.dumps(commands), env=env)
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        if any(answer["codes"]):
            raise SystemExit(f"a timed command failed: {answer}")
        return float(answer["seconds"])

    driver, plain, direct = [], [], []
    for _ in range(WARM_REPEATS):
        driver.append(timed([driver_argv]))
        plain.append(timed(plain_argvs))
        direct.append(timed(direct_argvs))
    ratio = median(driver) / median(plain)
    return {
        "driver_warm_s": median(driver),
        "plain_buildx_warm_s": median(plain),
        "ratio": round(ratio, 3),
        "direct_buildx_warm_s": median(direct),
        "ratio_vs_direct_buildx": round(median(driver) / median(direct), 3),
        "driver_runs_s": driver,
        "plain_runs_s": plain,
        "direct_runs_s": direct,
        "reuse": reuse,
        "targets_reused": reused,
        "repeats": WARM_REPEATS,
        "target": "<= 1.10",
        "ok": ratio <= 1.10,
    }


def _now() -> str:
    """The time, UTC, as the results file records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _commit() -> str:
    """The checkout's commit (`+dirty` when release/ or bench/ differ from it, results aside): what a section measured."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "release", "bench", ":!bench/results"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head + ("+dirty" if dirty else "")


def main() -> None:
    """Run the sections named on the command line (default: all), write the results file, take the shape down."""
    benches: dict[str, Callable[[Cluster], dict[str, Any]]] = {
        "fresh_runner": bench_fresh_runner,
        "fresh_shared_builder": bench_fresh_shared_builder,
        "fresh_container_builder": bench_fresh_container_builder,
        "two_runners": bench_two_runners,
        "shared_builder": bench_shared_builder,
        "bytes_moved": bench_bytes,
        "shaped_link": bench_shaped_link,
        "driver_overhead": bench_overhead,
        "driver_overhead_container_builder": lambda c: bench_overhead(c, CONTAINER_BUILDER),
        "driver_overhead_reuse": lambda c: bench_overhead(c, reuse="always"),
    }
    only = set(sys.argv[1:])
    c = Cluster()
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if only and RESULTS.exists() else {}
    results.update({"repeats": REPEATS, "context": CONTEXT, "measured_at": _now()})
    try:
        for name, func in benches.items():
            if only and name not in only:
                continue
            print(f"== {name}", file=sys.stderr)
            results[name] = {**func(c), "measured_at": _now(), "commit": _commit()}
            print(json.dumps(results[name], indent=2), file=sys.stderr)
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        c.cli("devstack", "down", "--shape", "cluster", check=False)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
