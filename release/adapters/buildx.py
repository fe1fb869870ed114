"""The buildx adapter: the `BuildEngine` port the release pipeline receives, and its docker CLI implementation.

One source of truth for the build command: `BuildRequest.argv()` is what a dry run prints and exactly what
`Buildx.build` runs (through the process adapter, in a process group of its own). python-on-whales supplies the
docker command (the client it resolves, with its global options) and asks the engine's questions (preflight, prune).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
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

    def argv(self, docker: Sequence[str] = ("docker",)) -> list[str]:
        """The command line: what a dry run prints and, after the resolved `docker` command, what runs."""
        argv = [*docker, "buildx", "build", "--push", f"--progress={self.progress}"]
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
    """The BuildEngine of the docker CLI: python-on-whales resolves its command; builds run through the process adapter."""

    def __init__(self, client: Any = None) -> None:
        """Use `client` (a python_on_whales.DockerClient), else a default one made on first use."""
        self._client = client
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopped = False
        self._driver: str | None = None

    def sees_cache_traffic(self, docker_host: str | None) -> bool:
        """The docker driver of an engine on this host's unix socket (`docker_host`: DOCKER_HOST) shows its connections.

        A docker-container builder's BuildKit has a network namespace of its own, a remote or kubernetes one another
        host: the kernel's socket table here shows none of their connections.
        """
        return self._driver == "docker" and (not docker_host or docker_host.startswith("unix://"))

    def docker(self) -> list[str]:
        """The docker command as python-on-whales resolves it: the client on PATH and its global options."""
        from python_on_whales import DockerClient
        from python_on_whales.client_config import ClientNotFoundError

        try:
            self._client = self._client or DockerClient()
            return [str(part) for part in self._client.client_config.docker_cmd]
        except ClientNotFoundError:
            raise EngineError(f"docker is not installed here; {RELEASE_HELP}") from None

    def _asking(self) -> list[str]:
        """The docker command for the preflight questions: the given client's, else the docker on PATH.

        That is what python-on-whales' default client resolves to; finding it without importing python-on-whales
        lets the questions start at once (the import takes longer than the answers).
        """
        if self._client is not None:
            return self.docker()
        found = shutil.which("docker")
        if found is None:
            raise EngineError(f"docker is not installed here; {RELEASE_HELP}")
        return [found]

    def preflight(self, builder: str | None) -> str:
        """Fail at once, before any work, when docker, buildx or a cache-capable builder is missing; its name."""
        docker = self._asking()
        questions = (
            [*docker, "buildx", "inspect", *([builder] if builder else [])],
            [*docker, "info", "--format", "{{json .DriverStatus}}"],
        )
        # Both questions at once; python-on-whales resolves the builds' docker command while the engine answers.
        running = [process.start(argv, what=f"`docker {argv[1]}`") for argv in questions]
        self.docker()
        inspect, info = (_answer(proc) for proc in running)
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
        if fields.get("Driver") == "docker" and "io.containerd.snapshotter" not in info.out:
            raise EngineError(
                f"builder {name} (docker driver) cannot export a registry cache: turn on the containerd image store "
                "(daemon.json features.containerd-snapshotter) or select a docker-container/kubernetes/remote builder"
            )
        return name

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
        argv = request.argv(self.docker())
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
