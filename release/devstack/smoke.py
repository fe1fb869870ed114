"""Smoke checks of released images on an engine: the api answers HTTP on its port, the worker runs its job loop.

`fractalops-release devstack smoke api=<image_ref> worker=<image_ref>` runs them with `docker` from PATH (after
`eval "$(fractalops-release devstack up)"`, the stack's engine): exit 0 when every image passes, 1 otherwise.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from release.adapters import process
from release.errors import OperationError, UsageError

# Runs inside a container that shares the api container's network namespace: GET each path until it answers.
PROBE = """
import json, sys, time, urllib.request
port, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
answers = {}
for path in sys.argv[3:]:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
                answers[path] = [reply.status, json.loads(reply.read())]
                break
        except OSError as err:
            if time.monotonic() > deadline:
                sys.exit(f"GET {path} on port {port}: {err}")
            time.sleep(0.2)
print(json.dumps(answers))
"""


class SmokeError(OperationError):
    """A released image did not do what it is for."""


@dataclass(frozen=True)
class SmokeResult:
    """What a smoke check saw: the image, and the HTTP answers or log lines that proved it works."""

    image: str
    evidence: str


def docker_run(docker: Sequence[str], env: Mapping[str, str], args: Sequence[str], timeout: float = 120.0) -> str:
    """Run a docker command on the engine and return its stdout; a failure is a SmokeError."""
    try:
        return process.run([*docker, *args], env=env, timeout=timeout, what=f"docker {args[0]}").stdout
    except process.ProcessError as err:
        raise SmokeError(str(err)) from None


def exposed_port(docker: Sequence[str], env: Mapping[str, str], image: str) -> int:
    """Return the one TCP port the image says it serves (its EXPOSE)."""
    raw = docker_run(docker, env, ["image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image]).strip()
    ports = [int(key.split("/")[0]) for key in (json.loads(raw) or {}) if key.endswith("/tcp")]
    if len(ports) != 1:
        raise SmokeError(f"{image}: expected one exposed TCP port, found {ports or 'none'}")
    return ports[0]


def smoke_api(docker: Sequence[str], env: Mapping[str, str], image: str, timeout: float = 60.0) -> SmokeResult:
    """Start the api image, GET /healthz and /v1/tile on its exposed port from a second container; stop it."""
    docker_run(docker, env, ["pull", "--quiet", image], timeout=300.0)
    port = exposed_port(docker, env, image)
    name = f"fractalops-smoke-api-{secrets.token_hex(4)}"
    docker_run(docker, env, ["run", "--detach", "--name", name, image])
    try:
        probe = ["run", "--rm", "--network", f"container:{name}", "--entrypoint", "python", image]
        out = docker_run(docker, env, [*probe, "-c", PROBE, str(port), str(timeout), "/healthz", "/v1/tile?size=32"])
        answers = json.loads(out.strip().splitlines()[-1])
    except SmokeError as err:
        logs = process.run([*docker, "logs", "--tail", "20", name], env=env, check=False)
        raise SmokeError(
            f"{image}: the api did not answer: {err}; its log: {(logs.stdout + logs.stderr)[-800:]}"
        ) from None
    finally:
        process.run([*docker, "rm", "--force", name], env=env, check=False)
    health = answers.get("/healthz", [0, {}])
    if health[0] != 200 or health[1].get("status") != "ok":
        raise SmokeError(f"{image}: GET /healthz answered {health}")
    return SmokeResult(image, f"port {port}: {json.dumps(answers, sort_keys=True)}")


def smoke_worker(docker: Sequence[str], env: Mapping[str, str], image: str, timeout: float = 60.0) -> SmokeResult:
    """Start the worker image with a short job interval and wait until its log shows two finished jobs; stop it."""
    docker_run(docker, env, ["pull", "--quiet", image], timeout=300.0)
    name = f"fractalops-smoke-worker-{secrets.token_hex(4)}"
    docker_run(docker, env, ["run", "--detach", "--name", name, "--env", "JOB_INTERVAL_SECONDS=0.2", image])
    deadline = time.monotonic() + timeout
    try:
        while True:
            logs = process.run([*docker, "logs", name], env=env, check=False)
            lines = (logs.stdout + logs.stderr).splitlines()
            if any("job loop started" in line for line in lines) and any(" job 2 done" in line for line in lines):
                return SmokeResult(image, " | ".join(lines[:3]))
            if time.monotonic() > deadline:
                raise SmokeError(f"{image}: no job loop in its log within {timeout:g} s: {' | '.join(lines[-5:])}")
            time.sleep(0.3)
    finally:
        process.run([*docker, "rm", "--force", name], env=env, check=False)


CHECKS = {"api": smoke_api, "worker": smoke_worker}


def parse_checks(args: Sequence[str]) -> list[tuple[str, str]]:
    """`api=<image_ref> worker=<image_ref>` as (role, image_ref) pairs; anything else is a UsageError."""
    pairs = [arg.partition("=") for arg in args]
    bad = [arg for arg, (role, sep, ref) in zip(args, pairs, strict=True) if role not in CHECKS or not sep or not ref]
    if not args or bad:
        raise UsageError(f"want api=<image_ref> and/or worker=<image_ref>, not {bad or 'nothing'}")
    return [(role, ref) for role, _, ref in pairs]


def run_check(role: str, image: str, env: Mapping[str, str]) -> SmokeResult:
    """Run one role's check with `docker` from PATH in `env`; a failure is a SmokeError naming the role."""
    try:
        return CHECKS[role](["docker"], env, image)
    except OperationError as err:
        raise SmokeError(f"smoke {role}: {err}") from None
