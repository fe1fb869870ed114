"""The engine boundary: docker and buildx through python-on-whales, failures as EngineError."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from release.errors import ConfigError, EngineError

RELEASE_HELP = (
    "releases run in CI: run the 'Runtime Release' workflow (.github/workflows/runtime-release.yml), "
    'or start the local stack with `eval "$(fractalops-release devstack up)"`'
)


@dataclass(frozen=True)
class BuildRequest:
    """Everything one `docker buildx build` needs: plain data, printable in a dry run."""

    context: Path
    dockerfile: Path
    target: str
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

    def argv(self) -> list[str]:
        """The equivalent command line (for dry runs and benchmarks)."""
        argv = ["docker", "buildx", "build", "--push", f"--progress={self.progress}"]
        if self.builder:
            argv += ["--builder", self.builder]
        argv += ["--file", str(self.dockerfile), "--target", self.target]
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


def _docker() -> Any:
    from python_on_whales import DockerClient

    return DockerClient()


# docker 26: "docker: 'buildx' is not a docker command."; docker 28: "docker: unknown command: docker buildx".
_NO_BUILDX = re.compile(r"^.*(?:'buildx' is not a docker command|unknown command:? (?:docker )?\"?buildx\b).*$", re.M)
_NO_DAEMON = re.compile(r"Cannot connect to the Docker daemon at (?P<address>\S+?)\.? Is the docker daemon running")


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


def preflight(builder: str | None) -> str:
    """Fail at once, before any work, when docker, buildx or a cache-capable builder is missing; return its name."""
    docker = shutil.which("docker")
    if docker is None:
        raise EngineError(f"docker is not installed here; {RELEASE_HELP}")
    inspect_argv = [docker, "buildx", "inspect", *([builder] if builder else [])]
    info_argv = [docker, "info", "--format", "{{json .DriverStatus}}"]
    # Both questions at once: start-up time is part of every release.
    inspect = subprocess.Popen(inspect_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info = subprocess.Popen(info_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    inspect_out, inspect_err = inspect.communicate()
    info_out, info_err = info.communicate()
    if inspect.returncode == 127:
        raise EngineError(
            f"docker at {docker} is the workspace stub (exit 127): this machine has no container runtime; {RELEASE_HELP}"
        )
    missing = _missing_parts(inspect_out + inspect_err, info_err)
    if missing:
        raise EngineError(f"{' and '.join(missing)}; {RELEASE_HELP}")
    if inspect.returncode != 0:
        detail = (inspect_err or inspect_out).strip().splitlines()
        reason = detail[-1] if detail else f"exit {inspect.returncode}"
        if "no builder" in reason and "found" in reason:
            raise ConfigError(f"--builder / FRACTALOPS_BUILDER: {builder!r}: {reason}")
        raise EngineError(f"builder {builder or '(current)'} is not usable: {reason}")
    fields: dict[str, str] = {}
    for key, _, value in (line.partition(":") for line in inspect_out.splitlines()):
        if key.strip() in {"Name", "Driver"} and value.strip():
            fields.setdefault(key.strip(), value.strip())  # the builder's, not its nodes'

    name, driver = fields.get("Name", builder or "default"), fields.get("Driver", "")
    if driver == "docker" and "io.containerd.snapshotter" not in info_out:
        raise EngineError(
            f"builder {name} (docker driver) cannot export a registry cache: turn on the containerd image store "
            "(daemon.json features.containerd-snapshotter) or select a docker-container/kubernetes/remote builder"
        )
    return name


def _attrs(text: str) -> dict[str, str]:
    """`type=registry,ref=…` as the mapping python-on-whales expects."""
    return dict(part.split("=", 1) for part in text.split(","))


def _stderr(err: Any) -> str:
    text = getattr(err, "stderr", "") or str(err)
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


class CacheDeadlineExceeded(EngineError):
    """A cache import or export step made no progress for the cache deadline; the build was stopped."""

    def __init__(self, target: str, step: str) -> None:
        """Name the target and the step that hung."""
        super().__init__(f"build of target {target}: {step} made no progress for the cache deadline; stopped")
        self.step = step


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_build_processes(marker: str) -> None:
    """Stop this process's docker/buildx children whose command line holds `marker`, and their children."""
    tree = _children()
    roots = [pid for pid in tree.get(os.getpid(), []) if marker in _cmdline(pid)]
    doomed, queue = [], list(roots)
    while queue:
        pid = queue.pop()
        doomed.append(pid)
        queue.extend(tree.get(pid, []))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in doomed):
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def build(
    request: BuildRequest,
    on_line: Callable[[str], None],
    stalled: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Run one build, streaming progress lines to `on_line`; return the metadata file's content.

    `stalled` is polled while the build runs: when it names a step, the build is stopped and
    CacheDeadlineExceeded raised (BuildKit has no timeout of its own for registry cache calls).
    """
    from python_on_whales.exceptions import DockerException

    request.metadata_file.parent.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    hung: list[str] = []

    def watchdog() -> None:
        while stalled is not None and not done.wait(0.25):
            step = stalled()
            if step:
                hung.append(step)
                _stop_build_processes(str(request.metadata_file))
                return

    guard = threading.Thread(target=watchdog, name=f"cache-deadline-{request.target}", daemon=True)
    guard.start()
    try:
        lines = cast(
            Iterator[str],
            _docker().buildx.build(
                context_path=request.context,
                file=request.dockerfile,
                target=request.target,
                tags=list(request.tags),
                build_args=request.build_args,
                labels=request.labels,
                cache_from=[_attrs(ref) for ref in request.cache_from] or None,
                cache_to=request.cache_to,
                platforms=list(request.platforms) or None,
                builder=request.builder,
                push=True,
                metadata_file=request.metadata_file,
                progress=cast(Any, request.progress),
                stream_logs=True,
            ),
        )
        for line in lines:
            on_line(line)
    except DockerException as err:
        if hung:
            raise CacheDeadlineExceeded(request.target, hung[0]) from None
        raise EngineError(f"build of target {request.target} failed: {_stderr(err)}") from None
    finally:
        done.set()
        guard.join()
    if hung:
        raise CacheDeadlineExceeded(request.target, hung[0])
    try:
        return cast(dict[str, Any], json.loads(request.metadata_file.read_text()))
    except (OSError, ValueError) as err:
        raise EngineError(f"build of target {request.target}: no readable metadata file ({err})") from None


def stop_builds() -> None:
    """Stop every build this process started (an interrupted release)."""
    _stop_build_processes("buildx")


def prune_builder_cache(builder: str | None) -> None:
    """Drop the builder's local cache (`docker buildx prune -af`)."""
    from python_on_whales.exceptions import DockerException
    from python_on_whales.utils import run

    docker = _docker()
    try:
        run([*docker.docker_cmd, "buildx", "prune", "--all", "--force", *(["--builder", builder] if builder else [])])
    except DockerException as err:
        raise EngineError(f"buildx prune failed: {_stderr(err)}") from None
