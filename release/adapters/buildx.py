"""The buildx adapter: the `BuildEngine` port the release pipeline receives, and its docker CLI implementation.

One source of truth for the build command: `BuildRequest.argv()` is what a dry run prints (`docker buildx build …`)
and what `Buildx.build` runs (through the process adapter, in a process group of its own), its first words being the
buildx plugin binary that `docker buildx` itself would run. The docker command is a given python-on-whales client's
(with its global options), else the docker on PATH, which is what python-on-whales' default client resolves to;
python-on-whales runs the engine's maintenance questions (prune).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from release.adapters import process
from release.errors import ConfigError, EngineError

RELEASE_HELP = (
    "releases run in CI: run the 'Runtime Release' workflow (.github/workflows/runtime-release.yml), "
    'or start the local stack with `eval "$(fractalops-release devstack up)"`'
)
STOP_TIMEOUT_S = 1.5  # SIGTERM, then SIGKILL for a build that has not gone after this long

LineSink = Callable[[str], None]
StallCheck = Callable[[], str | None]


@dataclass(frozen=True)
class BuildRequest:
    """Everything one `docker buildx build` needs: plain data, printable in a dry run."""

    name: str  # the release target (api, worker): names the build in messages
    context: Path
    dockerfile: Path
    stage: str
    tags: tuple[str, ...]
    build_args: dict[str, str]
    labels: dict[str, str]
    cache_from: tuple[str, ...]
    cache_to: str | None
    platforms: tuple[str, ...]
    builder: str | None
    metadata_file: Path
    progress: str = "rawjson"

    def cache_registries(self) -> list[str]:
        """The registries (`host[:port]`) of the cache import and export refs."""
        from release.imageref import parse_image_ref

        refs = [_attrs(ref).get("ref", "") for ref in (*self.cache_from, *([self.cache_to] if self.cache_to else []))]
        return sorted({parse_image_ref(ref, what="cache ref").registry for ref in refs if ref})

    def argv(self, buildx: Sequence[str] = ("docker", "buildx")) -> list[str]:
        """The command line: what a dry run prints and, after the resolved `buildx` command, what runs."""
        argv = [*buildx, "build", "--push", f"--progress={self.progress}"]
        if self.builder:
            argv += ["--builder", self.builder]
        argv += ["--file", str(self.dockerfile), "--target", self.stage]
        for tag in self.tags:
            argv += ["--tag", tag]
        for key, value in self.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in self.labels.items():
            argv += ["--label", f"{key}={value}"]
        for ref in self.cache_from:
            argv += ["--cache-from", ref]
        if self.cache_to:
            argv += ["--cache-to", self.cache_to]
        if self.platforms:
            argv += ["--platform", ",".join(self.platforms)]
        argv += ["--metadata-file", str(self.metadata_file), str(self.context)]
        return argv


class BuildEngine(Protocol):
    """What the release pipeline needs from a build engine (buildx here; a fake in tests)."""

    def preflight(self, builder: str | None) -> str:
        """Refuse at once when the engine cannot build and export a registry cache; the builder's name."""

    def sees_cache_traffic(self, docker_host: str | None) -> bool:
        """Whether the builder's connections are this host's (after preflight): the docker driver of a local engine."""

    def native_platform(self) -> str | None:
        """The platform the builder builds when none is asked for (after preflight); None when it cannot be told."""

    def build(self, request: BuildRequest, on_line: LineSink, stalled: StallCheck | None = None) -> dict[str, Any]:
        """Run one build, each progress line to `on_line`; its metadata. `stalled` naming a step stops it."""

    def stop_all(self) -> None:
        """Stop every running build (an interrupted release); none starts afterwards."""

    def prune(self, builder: str | None) -> None:
        """Drop the builder's local cache."""


class CacheDeadlineExceeded(EngineError):
    """A cache import or export step made no progress for the cache deadline, so the build was stopped."""

    def __init__(self, target: str, step: str) -> None:
        """Name the target and the step that hung."""
        super().__init__(f"build of target {target}: {step} made no progress for the cache deadline; stopped")
        self.step = step


# docker 26: "docker: 'buildx' is not a docker command."; docker 28: "docker: unknown command: docker buildx".
_NO_BUILDX = re.compile(r"^.*(?:'buildx' is not a docker command|unknown command:? (?:docker )?\"?buildx\b).*$", re.M)
_NO_DAEMON = re.compile(r"Cannot connect to the Docker daemon at (?P<address>\S+?)\.? Is the docker daemon running")


@dataclass(frozen=True)
class _Answer:
    """A docker CLI question's exit code and output."""

    code: int
    out: str
    err: str


def _answer(proc: subprocess.Popen[bytes]) -> _Answer:
    """A started question's exit code and output."""
    out, err = proc.communicate()
    return _Answer(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _ask(argv: Sequence[str]) -> _Answer:
    """Run a short docker command through python-on-whales; its answer, failures included."""
    from python_on_whales.exceptions import DockerException
    from python_on_whales.utils import run

    try:
        out, err = run(list(argv), return_stderr=True)
    except DockerException as failed:
        return _Answer(failed.return_code, failed.stdout or "", failed.stderr or "")
    return _Answer(0, out, err)


def _fields(inspect_output: str) -> dict[str, str]:
    """The builder's own Name and Driver from `docker buildx inspect` (not its nodes')."""
    fields: dict[str, str] = {}
    for key, _, value in (line.partition(":") for line in inspect_output.splitlines()):
        if key.strip() in {"Name", "Driver"} and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return fields


def _missing_parts(inspect_output: str, info_stderr: str) -> list[str]:
    """What `docker buildx inspect` and `docker info` say is missing: the buildx plugin, the daemon (and where)."""
    missing = []
    plugin = _NO_BUILDX.search(inspect_output)
    if plugin:
        missing.append(f"docker buildx is missing ({plugin.group(0).strip()})")
    # The daemon matters when buildx is missing (both must be set up) or when the builder itself cannot reach it;
    # a kubernetes or remote builder needs no local daemon.
    daemon = _NO_DAEMON.search(inspect_output) or (_NO_DAEMON.search(info_stderr) if plugin else None)
    if daemon:
        missing.append(f"no Docker daemon answers at {daemon.group('address')}")
    return missing


def _native_platform(inspect_output: str) -> str | None:
    """The first platform of the first `Platforms:` line of `docker buildx inspect` (`*`: one set by hand)."""
    for key, _, value in (line.partition(":") for line in inspect_output.splitlines()):
        if key.strip() == "Platforms":
            first = value.split(",")[0].strip().rstrip("*")
            return first or None
    return None


_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm/v7"}


def local_platform() -> str | None:
    """The platform of the machine running the driver, as OCI names it (`linux/amd64`); None if not in the table."""
    import platform

    arch = _MACHINES.get(platform.machine())
    return f"{platform.system().lower()}/{arch}" if arch else None


def _buildx_plugin(client_info: str) -> str | None:
    """The path of the buildx plugin in `docker info`'s ClientInfo (JSON), when docker lists it without an error."""
    try:
        plugins = json.loads(client_info).get("Plugins") or []
    except (ValueError, AttributeError):
        return None
    for plugin in plugins:
        if isinstance(plugin, dict) and plugin.get("Name") == "buildx" and not plugin.get("Err"):
            path = plugin.get("Path")
            return path if isinstance(path, str) and Path(path).is_file() else None
    return None


def _attrs(text: str) -> dict[str, str]:
    """`type=registry,ref=…` as a mapping."""
    return dict(part.split("=", 1) for part in text.split(","))


class _LastText:
    """The last line of buildx's own words between its rawjson objects (its error, when a build fails)."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.inside = False
        self.text = ""

    def feed(self, line: str) -> None:
        """Follow one output line: rawjson objects open with `{` and close with `}` at the start of a line."""
        if line.startswith("{"):
            self.inside = not line.rstrip().endswith("}")
        elif line.startswith("}"):
            self.inside = False
        elif not self.inside and line.strip():
            self.text = line.strip()


class Buildx:
    """The BuildEngine of the docker CLI: questions and builds run through the process adapter, prune through python-on-whales."""

    def __init__(self, client: Any = None) -> None:
        """Use `client` (a python_on_whales.DockerClient with global options), else the docker on PATH."""
        self._client = client
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopped = False
        self._driver: str | None = None
        self._native: str | None = None  # the builder's first node's first platform (preflight: `buildx inspect`)
        self._plugin: str | None = None  # the buildx plugin binary (preflight: `docker info`'s ClientInfo)
        self._asked: tuple[str | None, Future[tuple[list[str], _Answer, _Answer]]] | None = None  # see `ask`

    def sees_cache_traffic(self, docker_host: str | None) -> bool:
        """The docker driver of an engine on this host's unix socket (`docker_host`: DOCKER_HOST) shows its connections.

        A docker-container builder's BuildKit has a network namespace of its own, a remote or kubernetes one another
        host: the kernel's socket table here shows none of their connections.
        """
        return self._driver == "docker" and (not docker_host or docker_host.startswith("unix://"))

    def native_platform(self) -> str | None:
        """The builder's native platform, as `buildx inspect` lists it first for its first node (after preflight).

        An inactive docker-container builder lists none before it boots; it runs here, so this machine's is its.
        """
        return self._native or local_platform()

    def docker(self) -> list[str]:
        """The docker command: a given client's (python-on-whales: its binary and global options), else the docker on PATH.

        The docker on PATH is exactly what python-on-whales' default client resolves to (`shutil.which("docker")`, no
        global options); finding it without importing the library keeps that import, a tenth to a quarter of a second
        of CPU, off the start of every release (bench/cluster_bench.py, driver_overhead).
        """
        if self._client is not None:
            from python_on_whales.client_config import ClientNotFoundError

            try:
                return [str(part) for part in self._client.client_config.docker_cmd]
            except ClientNotFoundError:
                raise EngineError(f"docker is not installed here; {RELEASE_HELP}") from None
        found = shutil.which("docker")
        if found is None:
            raise EngineError(f"docker is not installed here; {RELEASE_HELP}")
        return [found]

    def ask(self, builder: str | None) -> None:
        """Ask preflight's questions about `builder` now, on a side thread: `preflight(builder)` takes the answers.

        The docker CLI takes a tenth of a second or more to answer; asked as the command starts, it answers while
        the settings and the release's inputs load. A preflight about another builder asks again.
        """
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight")
        self._asked = (builder, pool.submit(self._questions, builder))
        pool.shutdown(wait=False)

    def _questions(self, builder: str | None) -> tuple[list[str], _Answer, _Answer]:
        """The docker command, and its answers to `buildx inspect` and `info` (asked at once)."""
        docker = self.docker()
        questions = (
            [*docker, "buildx", "inspect", *([builder] if builder else [])],
            [*docker, "info", "--format", '{{json .DriverStatus}}{{"\\n"}}{{json .ClientInfo}}'],
        )
        running = [process.start(argv, what=f"`docker {argv[1]}`") for argv in questions]
        inspect, info = (_answer(proc) for proc in running)
        return docker, inspect, info

    def preflight(self, builder: str | None) -> str:
        """Fail at once, before any work, when docker, buildx or a cache-capable builder is missing; its name."""
        asked, self._asked = self._asked, None
        if asked is not None and asked[0] == builder:
            docker, inspect, info = asked[1].result()
        else:
            docker, inspect, info = self._questions(builder)
        if inspect.code == 127:
            raise EngineError(
                f"docker at {docker[0]} is the workspace stub (exit 127): this machine has no container runtime; "
                f"{RELEASE_HELP}"
            )
        missing = _missing_parts(inspect.out + inspect.err, info.err)
        if missing:
            raise EngineError(f"{' and '.join(missing)}; {RELEASE_HELP}")
        if inspect.code != 0:
            detail = (inspect.err or inspect.out).strip().splitlines()
            reason = detail[-1] if detail else f"exit {inspect.code}"
            if "no builder" in reason and "found" in reason:
                raise ConfigError(f"--builder / FRACTALOPS_BUILDER: {builder!r}: {reason}")
            raise EngineError(f"builder {builder or '(current)'} is not usable: {reason}")
        fields = _fields(inspect.out)
        name = fields.get("Name", builder or "default")
        self._driver = fields.get("Driver")
        self._native = _native_platform(inspect.out)
        driver_status, _, client_info = info.out.partition("\n")
        if fields.get("Driver") == "docker" and "io.containerd.snapshotter" not in driver_status:
            raise EngineError(
                f"builder {name} (docker driver) cannot export a registry cache: turn on the containerd image store "
                "(daemon.json features.containerd-snapshotter) or select a docker-container/kubernetes/remote builder"
            )
        self._plugin = None if self._client is not None else _buildx_plugin(client_info)
        return name

    def buildx(self) -> list[str]:
        """The buildx command the builds run: the plugin binary docker itself runs for `docker buildx`, once preflight found it.

        The binary takes the same arguments after its own name (buildx's standalone mode, as docker/actions-toolkit
        runs it); skipping the docker CLI's plugin dispatch saves a twentieth of a second a build. A given
        python-on-whales client (global options) and a plugin docker did not report keep `docker buildx`.
        """
        return [self._plugin] if self._plugin else [*self.docker(), "buildx"]

    def build(self, request: BuildRequest, on_line: LineSink, stalled: StallCheck | None = None) -> dict[str, Any]:
        """Run `request.argv()`, each output line to `on_line`; the metadata file's content.

        `stalled` is polled while the build runs: when it names a step, the build's process group is stopped and
        CacheDeadlineExceeded raised (BuildKit has no timeout of its own for registry cache calls).
        """
        request.metadata_file.parent.mkdir(parents=True, exist_ok=True)
        proc = self._start(request)
        done, hung = threading.Event(), []

        def watchdog() -> None:
            while stalled is not None and not done.wait(0.25):
                step = stalled()
                if step:
                    hung.append(step)
                    process.stop_group(proc.pid, STOP_TIMEOUT_S)
                    return

        guard = threading.Thread(target=watchdog, name=f"cache-deadline-{request.name}", daemon=True)
        guard.start()
        last = _LastText()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                last.feed(line)
                on_line(line)
            code = proc.wait()
        finally:
            done.set()
            guard.join()
            with self._lock:
                self._running.discard(proc)
        if hung:
            raise CacheDeadlineExceeded(request.name, hung[0])
        return self._metadata(request, code, last.text)

    def _start(self, request: BuildRequest) -> subprocess.Popen[bytes]:
        """Start the build in a process group of its own, unless the release is being stopped."""
        argv = request.argv(self.buildx())
        with self._lock:
            if self._stopped:
                raise EngineError(f"build of target {request.name}: not started, the release is stopping")
            proc = process.start(argv, stderr=subprocess.STDOUT, what=f"build of target {request.name}")
            self._running.add(proc)
        return proc

    def _metadata(self, request: BuildRequest, code: int, last_text: str) -> dict[str, Any]:
        """The metadata buildx wrote; EngineError naming buildx's last words when the build failed or was stopped."""
        if code != 0 or not request.metadata_file.exists():
            if self._stopped:
                raise EngineError(f"build of target {request.name} was stopped ({last_text or 'no output'})")
            if code != 0:
                raise EngineError(f"build of target {request.name} failed: {last_text or f'exit {code}'}")
        try:
            return cast(dict[str, Any], json.loads(request.metadata_file.read_text()))
        except (OSError, ValueError) as err:
            raise EngineError(f"build of target {request.name}: no readable metadata file ({err})") from None

    def stop_all(self) -> None:
        """Stop the process group of every running build; refuse to start more."""
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for proc in running:
            process.stop_group(proc.pid, STOP_TIMEOUT_S)

    def prune(self, builder: str | None) -> None:
        """Drop the builder's local cache (`docker buildx prune --all --force`)."""
        answer = _ask(
            [*self.docker(), "buildx", "prune", "--all", "--force", *(["--builder", builder] if builder else [])]
        )
        if answer.code != 0:
            lines = [line for line in answer.err.strip().splitlines() if line.strip()]
            raise EngineError(f"buildx prune failed: {lines[-1] if lines else f'exit {answer.code}'}")
