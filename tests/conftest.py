"""Suite-wide rules and fixtures: in CI (CI=true) a skipped test is a failure; the `devstack` session fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from release.devstack import down, up
from release.devstack.paths import StackPaths
from release.devstack.ports import PortLayout

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the order: unit tests first, then the integration tests that need the stack."""
    items.sort(key=lambda item: 1 if item.get_closest_marker("devstack") else 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI, turn every skip into a failure that names the reason."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"


CONTAINERS = REPO_ROOT / "ops" / "containers" / "fractalops"
# A state dir and port base of the tests' own, so the session never stops a developer's default stack.
SESSION_STATE_DIR = Path(os.environ.get("FRACTALOPS_TEST_DEVSTACK_DIR", "/tmp/fractalops-devstack-test"))
SESSION_PORT_BASE = int(os.environ.get("FRACTALOPS_TEST_DEVSTACK_PORT_BASE", "35180"))


@dataclass(frozen=True)
class Devstack:
    """A running stack as tests see it: env for tools, ports, topology, and a docker runner."""

    paths: StackPaths
    ports: PortLayout
    env: dict[str, str]
    topology: Path

    @property
    def docker_bin(self) -> str:
        """Return the stack's own docker client."""
        return str(self.paths.bin_dir / "docker")

    @property
    def hosted(self) -> str:
        """Return host:port of the hosted registry (images and build cache)."""
        return f"127.0.0.1:{self.ports.hosted}"

    def docker(self, args: Sequence[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run the stack's docker client with the stack env; never raises on a non-zero exit."""
        return subprocess.run(
            [self.docker_bin, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def cannot_install_reason() -> str | None:
    """Return why the stack cannot be installed here (not root, no apt), or None."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return "devstack needs a Debian machine with apt-get and dpkg"
    if os.geteuid() != 0:
        return "devstack needs root to install packages and run dockerd"
    return None


def stderr_log(message: str) -> None:
    """Show devstack progress on stderr (visible with -s)."""
    print(message, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def devstack() -> Iterator[Devstack]:
    """Bring the stack up once per session, export its env into os.environ, and take it down at the end."""
    reason = cannot_install_reason()
    if reason:
        pytest.skip(reason)
    saved = dict(os.environ)
    # A port base exported for a developer's own stack must not steer the tests' stacks.
    os.environ.pop("FRACTALOPS_DEVSTACK_PORT_BASE", None)
    stack = up(SESSION_STATE_DIR, SESSION_PORT_BASE, log=stderr_log)
    env = dict(stack.env)
    env["PATH"] = f"{stack.path_prefix}:{os.environ.get('PATH', '')}"
    os.environ.update(env)
    try:
        yield Devstack(paths=stack.paths, ports=stack.ports, env=env, topology=stack.topology_path)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        down(SESSION_STATE_DIR, log=stderr_log)
