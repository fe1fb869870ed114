"""Benchmarks of the release driver on the local stack, each a ratio against plain `docker buildx` in the same run.

Run: `.venv/bin/python bench/release_bench.py` (root; brings the devstack up). Results: bench/results/release.json.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
RELEASE_SH = ROOT / "ops/containers/fractalops/release.sh"
RESULTS = ROOT / "bench/results/release.json"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
# A warm release takes under a second here: more alternations keep its median steady.
WARM_REPEATS = int(os.environ.get("BENCH_WARM_REPEATS", "9"))
PYTHON = ROOT / ".venv/bin/python" if (ROOT / ".venv/bin/python").exists() else Path(sys.executable)
# What every release must load before its first build can start: the CLI (click), the topology (pydantic,
# ruamel.yaml) and the engine boundary (python-on-whales, which the build goes through).
FLOOR_IMPORTS = "import click, pydantic, ruamel.yaml"
PLAIN_CAP_S = 120.0
ORDERS = ("sequential", "parallel")  # the default build order first
BENCH_STACK = Path(os.environ.get("BENCH_DEVSTACK_DIR", "/tmp/fractalops-bench-devstack"))
BENCH_PORT_BASE = int(os.environ.get("BENCH_DEVSTACK_PORT_BASE", "35580"))


class Bench:
    """The stack, its env, and helpers to time the driver and plain buildx."""

    def __init__(self) -> None:
        from release.devstack import up

        # A stack of the bench's own, so its many cache repositories never land in a developer's stack.
        stack = up(BENCH_STACK, BENCH_PORT_BASE, log=lambda m: print(m, file=sys.stderr))
        self.env = {**os.environ, **stack.env, "PATH": f"{stack.path_prefix}:{os.environ['PATH']}"}
        for name in ("CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
            self.env.pop(name, None)
        # As a runner releases: Python keeps the compiled modules it wrote on the first run (a shell that forbids
        # writing them would time compiling the whole package on every release instead).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env.update(
            {"FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1", "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS": "0"}
        )
        self.topology = stack.topology_path
        self.hosted = f"127.0.0.1:{stack.ports.hosted}"
        self.workdir = Path(os.environ.get("BENCH_WORKDIR", "/tmp/fractalops-bench"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env["FRACTALOPS_BUILD_EVENTS_FILE"] = str(self.workdir / "events.jsonl")
        self.build_order = "parallel"  # until a plan says otherwise: one command runs on its own either way

    def topology_for(self, cache_port: int | None = None, cache_repo: str | None = None) -> Path:
        """A topology copy with its own cache repository (a cold cache) and/or a broken cache port."""
        yaml = YAML()
        data = yaml.load(self.topology.read_text())
        port = cache_port or data["nexus"]["docker_internal_port"]
        data["nexus"]["docker_internal_port"] = port
        data["registry_cache"]["buildcache_ref"] = f"127.0.0.1:{port}/fractalops/{cache_repo or 'buildcache'}"
        path = self.workdir / f"topology-{uuid.uuid4().hex[:8]}.yaml"
        with path.open("w") as handle:
            yaml.dump(data, handle)
        return path

    def prune(self) -> None:
        """Drop the builder's local cache."""
        subprocess.run(["docker", "buildx", "prune", "-af"], env=self.env, check=True, capture_output=True)

    def driver(
        self, topology: Path, *args: str, release_sh: Path = RELEASE_SH, extra: dict[str, str] | None = None
    ) -> tuple[float, dict[str, Any]]:
        """Time one release (of this checkout, or the one `release_sh` belongs to); return (seconds, --json document)."""
        env = {**self.env, "FRACTALOPS_TOPOLOGY": str(topology), **(extra or {})}
        if release_sh != RELEASE_SH:
            env.pop("FRACTALOPS_BUILD_ORDER", None)  # an older checkout may not know it (it built side by side)
            env["FRACTALOPS_REPO_ROOT"] = str(release_sh.parents[3])
        started = time.perf_counter()
        proc = subprocess.run([str(release_sh), "--json", *args], env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"driver failed: {proc.stderr[-2000:]}")
        return elapsed, json.loads(proc.stdout)

    def plan_commands(self, topology: Path, *args: str) -> list[list[str]]:
        """The plain buildx commands the driver would run (from its dry-run plan)."""
        env = {**self.env, "FRACTALOPS_TOPOLOGY": str(topology)}
        proc = subprocess.run(
            [str(RELEASE_SH), "--dry-run", *args], env=env, capture_output=True, text=True, check=True
        )
        commands = []
        plan = json.loads(proc.stdout)
        self.build_order = plan["build_order"]
        for target in plan["targets"]:
            argv = [a.replace("--progress=rawjson", "--progress=plain") for a in target["command"]]
            # The plan's metadata folder is the driver's temporary one, gone after the dry run.
            argv[argv.index("--metadata-file") + 1] = str(self.workdir / f"{target['name']}.metadata.json")
            commands.append(argv)
        return commands

    def plain(self, commands: list[list[str]], cap_s: float | None = None) -> float:
        """Time the plain buildx commands in the plan's build order (stopped at `cap_s`)."""
        if self.build_order == "sequential":
            started = time.perf_counter()
            for command in commands:
                left = None if cap_s is None else cap_s - (time.perf_counter() - started)
                if (left is not None and left <= 0) or self.side_by_side([command], left) == float("inf"):
                    return float("inf")
            return time.perf_counter() - started
        return self.side_by_side(commands, cap_s)

    def side_by_side(self, commands: list[list[str]], cap_s: float | None) -> float:
        """Time the commands run at once, as a person would in several shells (stopped at `cap_s`)."""
        started = time.perf_counter()
        procs = [
            subprocess.Popen(c, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for c in commands
        ]
        try:
            errors = [p.communicate(timeout=cap_s)[1] for p in procs]
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
                p.communicate()
            return float("inf")
        elapsed = time.perf_counter() - started
        if any(p.returncode for p in procs):
            raise SystemExit(f"plain buildx failed: {[e[-800:] for e in errors]}")
        return elapsed


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def interpreter_seconds(code: str) -> float:
    """Wall seconds of `python -c code` in the interpreter release.sh runs."""
    started = time.perf_counter()
    subprocess.run([str(PYTHON), "-c", code], check=True)
    return time.perf_counter() - started


def _warm(b: Bench, topology: Path, order: str, baseline: Path | None) -> dict[str, Any]:
    """Warm releases in one build order, alternating with the same plain buildx commands (and a baseline checkout)."""
    b.env["FRACTALOPS_BUILD_ORDER"] = order
    commands = b.plan_commands(topology)
    driver, plain, floor, bare, before = [], [], [], [], []
    for _ in range(WARM_REPEATS):
        plain.append(b.plain(commands))
        driver.append(b.driver(topology)[0])
        if baseline is not None:
            before.append(b.driver(topology, release_sh=baseline)[0])
        floor.append(interpreter_seconds(FLOOR_IMPORTS))
        bare.append(interpreter_seconds("pass"))
    ratio = median(driver) / median(plain)
    result: dict[str, Any] = {
        "build_order": order,
        "repeats": WARM_REPEATS,
        "driver_s": median(driver),
        "plain_buildx_s": median(plain),
        "ratio": round(ratio, 3),
        "overhead_s": round(median(driver) - median(plain), 3),
        "interpreter_s": median(bare),
        "import_floor_s": median(floor),
        "import_floor": FLOOR_IMPORTS,
        "best_possible_ratio": round((median(plain) + median(floor)) / median(plain), 3),
        "overhead_beyond_import_floor_s": round(median(driver) - median(plain) - median(floor), 3),
    }
    if before:
        result["baseline"] = {
            "checkout": str(baseline),
            "driver_s": median(before),
            "ratio": round(median(before) / median(plain), 3),
            "overhead_s": round(median(before) - median(plain), 3),
        }
    return result


def bench_overhead(b: Bench) -> dict[str, Any]:
    """1. A warm smoke release of both targets vs the same plain buildx commands, in each build order; cold for scale.

    Beside it, the import floor: a bare interpreter loading the libraries a release needs before its first build.
    With BENCH_BASELINE_ROOT (another checkout, e.g. a `git worktree` of an older commit) its release.sh is timed in
    the same loop, in the parallel order it always used, against the same plain commands.
    """
    baseline_root = os.environ.get("BENCH_BASELINE_ROOT")
    baseline = Path(baseline_root) / RELEASE_SH.relative_to(ROOT) if baseline_root else None
    topology = b.topology_for(cache_repo=f"bench-warm-{uuid.uuid4().hex[:6]}")
    b.driver(topology)  # warm the builder and the registry cache
    warm = {order: _warm(b, topology, order, baseline if order == "parallel" else None) for order in ORDERS}
    b.env.pop("FRACTALOPS_BUILD_ORDER")
    cold_driver, cold_plain = [], []
    for _ in range(REPEATS):
        b.prune()
        cold_plain.append(b.plain(b.plan_commands(b.topology_for(cache_repo=f"bench-ocold-{uuid.uuid4().hex[:6]}"))))
        b.prune()
        cold_driver.append(b.driver(b.topology_for(cache_repo=f"bench-ocold-{uuid.uuid4().hex[:6]}"))[0])
    ratio = warm[ORDERS[0]]["ratio"]
    return {
        "warm": warm[ORDERS[0]],
        "warm_parallel": warm["parallel"],
        "cold": {
            "build_order": b.build_order,
            "driver_s": median(cold_driver),
            "plain_buildx_s": median(cold_plain),
            "ratio": round(median(cold_driver) / median(cold_plain), 3),
        },
        "target": "warm ratio <= 1.10",
        "ok": ratio <= 1.10,
    }


def bench_concurrency(b: Bench) -> dict[str, Any]:
    """2. Both targets cold vs the slower single-target cold build."""
    both, single = [], []
    for _ in range(REPEATS):
        b.prune()
        both.append(b.driver(b.topology_for(cache_repo=f"bench-cold-{uuid.uuid4().hex[:6]}"))[0])
        singles = []
        for target in ("api", "worker"):
            b.prune()
            singles.append(
                b.driver(b.topology_for(cache_repo=f"bench-cold-{uuid.uuid4().hex[:6]}"), "--target", target)[0]
            )
        single.append(max(singles))
    ratio = median(both) / median(single)
    return {
        "both_cold_s": median(both),
        "slower_single_cold_s": median(single),
        "ratio": round(ratio, 3),
        "target": "<= 1.2",
        "ok": ratio <= 1.2,
    }


def bench_registry_warm(b: Bench) -> dict[str, Any]:
    """3. Warm from the registry cache alone (builder pruned) vs cold: every step CACHED, ratio <= 0.25."""
    cold, warm, ratios = [], [], []
    for _ in range(REPEATS):
        topology = b.topology_for(cache_repo=f"bench-reg-{uuid.uuid4().hex[:6]}")
        b.prune()
        cold.append(b.driver(topology)[0])
        b.prune()
        seconds, document = b.driver(topology)
        warm.append(seconds)
        ratios += [t["cache_hit_ratio"] for t in document["targets"]]
    ratio = median(warm) / median(cold)
    all_cached = all(r == 1.0 for r in ratios)
    return {
        "cold_s": median(cold),
        "warm_from_registry_s": median(warm),
        "ratio": round(ratio, 3),
        "hit_ratios": ratios,
        "target": "<= 0.25 and every step CACHED",
        "ok": ratio <= 0.25 and all_cached,
    }


@contextmanager
def broken_cache(kind: str) -> Iterator[int]:
    """A cache port that refuses, drops packets (iptables DROP on loopback) or accepts and stays silent."""
    if kind == "hangs-after-ping":
        sys.path.insert(0, str(ROOT / "tests"))
        from standins import HangingRegistry

        registry = HangingRegistry().start()
        try:
            yield registry.port
        finally:
            registry.close()
        return
    if kind == "silent":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            yield int(sock.getsockname()[1])
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    if kind == "refused":
        yield port
        return
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield port
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)


def bench_degraded(b: Bench) -> dict[str, Any]:
    """4. Degraded cache: refused, dropped, silent; driver <= cold + 3 s, plain buildx measured beside it."""
    out: dict[str, Any] = {}
    kinds = os.environ.get("BENCH_DEGRADED_KINDS", "refused,dropped,silent,hangs-after-ping").split(",")
    out.update(json.loads(RESULTS.read_text()).get("degraded_cache", {}) if RESULTS.exists() else {})
    for kind in kinds:
        with broken_cache(kind) as port:
            topology = b.topology_for(cache_port=port)
            drivers, colds = [], []
            for _ in range(REPEATS):
                b.prune()
                colds.append(b.driver(b.topology_for(cache_repo=f"bench-cold-{uuid.uuid4().hex[:6]}"), "--no-cache")[0])
                b.prune()
                drivers.append(b.driver(topology)[0])
            b.prune()
            # Plain buildx has no deadline of its own: cap it, and say so in the result.
            plain = b.plain(b.plan_commands(topology), cap_s=PLAIN_CAP_S)
        limit = median(colds) + 3.0
        out[kind] = {
            "driver_s": median(drivers),
            "cold_no_cache_s": median(colds),
            "plain_buildx_s": round(plain, 3) if plain != float("inf") else f"> {PLAIN_CAP_S:g} (stopped)",
            "limit_s": round(limit, 3),
            # Each driver run follows its own cold run: the pairs' differences cancel the machine's drift.
            "driver_minus_cold_paired_s": median([d - c for d, c in zip(drivers, colds, strict=True)]),
            "driver_runs_s": [round(d, 3) for d in drivers],
            "cold_runs_s": [round(c, 3) for c in colds],
            "repeats": len(drivers),
            "ok": median(drivers) <= limit,
        }
    return out


SLOW_LINKS = {"100KB/s": 100e3, "5MB/s": 5e6}
SLOW_LINK_DEADLINE_S = float(os.environ.get("BENCH_SLOW_LINK_DEADLINE", "30"))


def _exports_as_expected(exports: list[str], crawl: bool) -> bool:
    """A crawl: each release's first export cut (failed), the later targets without cache (skipped); else all ok."""
    if not crawl:
        return all(e == "ok" for e in exports)
    per_release = [exports[i : i + 2] for i in range(0, len(exports), 2)]
    return all(pair[0] == "failed" and all(e == "skipped" for e in pair[1:]) for pair in per_release)


def bench_slow_link(b: Bench) -> dict[str, Any]:
    """7. The cache host's link throttled (100 KB/s: a crawl, stopped; 5 MB/s: the export completes), cold releases.

    The cache sits behind a loopback proxy that passes `rate` bytes per second to it (the export's direction); the
    images still go to the stack's registry at full speed. Each repeat: cold with the cache over the full-speed
    link, cold without cache, then cold into a new cache behind the throttle, each on an emptied builder.
    """
    sys.path.insert(0, str(ROOT / "tests/integration"))
    from loopback_proxy import LoopbackProxy

    extra = {"FRACTALOPS_CACHE_DEADLINE": f"{SLOW_LINK_DEADLINE_S:g}"}
    hosted_port = int(b.hosted.rpartition(":")[2])
    out: dict[str, Any] = {"cache_deadline_s": SLOW_LINK_DEADLINE_S}
    for label, rate in SLOW_LINKS.items():
        colds, bare, throttled, exports, sent = [], [], [], [], []
        for _ in range(REPEATS):
            b.prune()
            colds.append(b.driver(b.topology_for(cache_repo=f"bench-fast-{uuid.uuid4().hex[:6]}"), extra=extra)[0])
            b.prune()
            bare.append(b.driver(b.topology_for(cache_repo=f"bench-cold-{uuid.uuid4().hex[:6]}"), "--no-cache")[0])
            b.prune()
            proxy = LoopbackProxy(hosted_port, rate=rate).start()
            try:
                topology = b.topology_for(cache_port=proxy.port, cache_repo=f"bench-slow-{uuid.uuid4().hex[:6]}")
                seconds, document = b.driver(topology, extra=extra)
            finally:
                proxy.close()
            throttled.append(seconds)
            exports += [t["cache_export"] for t in document["targets"]]
            sent.append(round(proxy.sent_upstream / 1e6, 1))
        out[label] = {
            "cold_s": median(colds),
            "cold_no_cache_s": median(bare),
            "driver_s": median(throttled),
            "driver_minus_cold_s": round(median(throttled) - median(colds), 3),
            "driver_minus_cold_paired_s": median([d - c for d, c in zip(throttled, colds, strict=True)]),
            "driver_minus_cold_no_cache_paired_s": median([d - c for d, c in zip(throttled, bare, strict=True)]),
            "cache_exports": exports,
            "mb_sent_to_cache": sent,
            "driver_runs_s": [round(d, 3) for d in throttled],
            "cold_runs_s": [round(c, 3) for c in colds],
            "limit_s": round(median(colds) + SLOW_LINK_DEADLINE_S, 3),
            # Each throttled run follows its own cold runs: the pairs' differences cancel the machine's drift.
            "ok": median([d - c for d, c in zip(throttled, colds, strict=True)]) <= SLOW_LINK_DEADLINE_S
            and _exports_as_expected(exports, crawl=rate < 500e3),
        }
    return out


CONTEXTS = ROOT / "bench/.contexts"  # generated build contexts (ignored by git)
SIZES_MB = (0, 130, 430)  # random MB added to the shared dependency layers: each image about 75, 205 and 505 MB


def generated_context(b: Bench, name: str, pad_mb: int = 0) -> tuple[Path, Path]:
    """A copy of the real images' context under bench/.contexts, `pad_mb` of incompressible bytes added to the
    dependency layers; (the context, a targets file building both targets from it)."""
    import shutil

    from ruamel.yaml import YAML

    context = CONTEXTS / name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(ROOT / "ops/containers/fractalops", context, ignore=shutil.ignore_patterns("__pycache__"))
    if pad_mb:
        dockerfile = context / "Dockerfile"
        marker = "ENV PATH=/opt/venv/bin:$PATH"
        pad = f"RUN head -c {pad_mb}M /dev/urandom > /opt/dependency-padding\n"
        dockerfile.write_text(dockerfile.read_text().replace(marker, pad + marker, 1))
    yaml = YAML()
    data = yaml.load((ROOT / "ops/containers/fractalops/targets.yaml").read_text())
    for target in data["targets"].values():
        target["context"] = str(context.relative_to(ROOT))
    targets = b.workdir / f"targets-{name}.yaml"
    with targets.open("w") as handle:
        yaml.dump(data, handle)
    return context, targets


def compressed_bytes(document: dict[str, Any], b: Bench) -> dict[str, int]:
    """Each released image's layer bytes as the hosted registry stores them (the image, not its attestation)."""
    from release.adapters.registry import RegistryClient
    from release.imageref import parse_pinned_ref

    hosted = RegistryClient(b.hosted, scheme="http")
    return {t["target"]: hosted.layer_bytes(parse_pinned_ref(t["image_ref"])) for t in document["targets"]}


def _cold_then_code_change(b: Bench, context: Path, driver: bool) -> tuple[float, float, list[float]]:
    """Cold into a new cache, then a code-only change on an emptied builder; (cold s, change s, hit ratios)."""
    topology = b.topology_for(cache_repo=f"bench-code-{uuid.uuid4().hex[:6]}")
    module = context / "app/fractalops/__init__.py"
    original = module.read_text()

    def once() -> tuple[float, list[float]]:
        b.prune()
        if not driver:
            return b.plain(b.plan_commands(topology)), []
        seconds, document = b.driver(topology)
        return seconds, [t["cache_hit_ratio"] for t in document["targets"]]

    try:
        cold, _ = once()
        module.write_text(original + f"\nCHANGE = {uuid.uuid4().hex!r}  # a code-only change\n")
        change, ratios = once()
    finally:
        module.write_text(original)
    return cold, change, ratios


def bench_code_change(b: Bench) -> dict[str, Any]:
    """5. A code-only change on a fresh builder (registry cache alone) vs cold, driver and plain buildx."""
    cold: list[float] = []
    change: list[float] = []
    plain_cold: list[float] = []
    plain_change: list[float] = []
    ratios: list[float] = []
    for n in range(REPEATS):
        context, targets = generated_context(b, f"code-change-{n}")
        b.env["FRACTALOPS_TARGETS"] = str(targets)
        seconds, changed, hits = _cold_then_code_change(b, context, driver=True)
        cold.append(seconds)
        change.append(changed)
        ratios += hits
        seconds, changed, _ = _cold_then_code_change(b, context, driver=False)
        plain_cold.append(seconds)
        plain_change.append(changed)
    b.env.pop("FRACTALOPS_TARGETS")
    ratio = median(change) / median(cold)
    return {
        "cold_s": median(cold),
        "code_change_fresh_builder_s": median(change),
        "ratio": round(ratio, 3),
        "hit_ratios": ratios,
        "plain_buildx_cold_s": median(plain_cold),
        "plain_buildx_code_change_s": median(plain_change),
        "plain_ratio": round(median(plain_change) / median(plain_cold), 3),
        "target": "<= 0.35",
        "ok": ratio <= 0.35,
    }


def bench_sizes(b: Bench) -> dict[str, Any]:
    """6. How the warm release grows with the dependency layers' size: driver vs plain buildx at each size."""
    rows = []
    for pad in SIZES_MB:
        _, targets = generated_context(b, f"size-{pad}", pad_mb=pad)
        b.env["FRACTALOPS_TARGETS"] = str(targets)
        topology = b.topology_for(cache_repo=f"bench-size-{uuid.uuid4().hex[:6]}")
        b.prune()
        cold, document = b.driver(topology)
        commands = b.plan_commands(topology)
        driver, plain = [], []
        for _ in range(REPEATS):
            plain.append(b.plain(commands))
            driver.append(b.driver(topology)[0])
        rows.append(
            {
                "padding_mb": pad,
                "image_mb": {name: round(size / 2**20, 1) for name, size in compressed_bytes(document, b).items()},
                "cold_s": round(cold, 3),
                "warm_driver_s": median(driver),
                "warm_plain_buildx_s": median(plain),
                "warm_ratio": round(median(driver) / median(plain), 3),
            }
        )
    b.env.pop("FRACTALOPS_TARGETS")
    return {"both_images": rows}


def main() -> None:
    """Run every benchmark and write the results file."""
    b = Bench()
    benches: dict[str, Callable[[Bench], dict[str, Any]]] = {
        "driver_overhead": bench_overhead,
        "concurrency": bench_concurrency,
        "registry_cache_warm": bench_registry_warm,
        "degraded_cache": bench_degraded,
        "code_change": bench_code_change,
        "image_size": bench_sizes,
        "slow_cache_link": bench_slow_link,
    }
    only = set(sys.argv[1:])
    # Running a subset (names on the command line) updates those sections and keeps the others.
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if only and RESULTS.exists() else {}
    results.update({"repeats": REPEATS, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    for name, func in benches.items():
        if only and name not in only:
            continue
        print(f"== {name}", file=sys.stderr)
        results[name] = func(b)
        print(json.dumps(results[name], indent=2), file=sys.stderr)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    from release.devstack import down

    down(BENCH_STACK, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
