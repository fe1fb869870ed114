"""Preflight refusals that a real engine cannot show: each docker here is a small stand-in script, named as such."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from release.adapters.buildx import Buildx
from release.errors import EngineError


def stand_in_docker(folder: Path, body: str) -> None:
    """Write a stand-in `docker` (a shell script) into `folder`."""
    folder.mkdir(exist_ok=True)
    script = folder / "docker"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


PathWith = Callable[[str | None], None]


@pytest.fixture
def path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PathWith:
    """PATH holding only a stand-in docker with `body` (None: no docker at all)."""

    def use(body: str | None) -> None:
        folder = tmp_path / "bin"
        folder.mkdir(exist_ok=True)
        if body is not None:
            stand_in_docker(folder, body)
        monkeypatch.setenv("PATH", str(folder))

    return use


def test_no_docker_at_all_is_refused(path_with: PathWith) -> None:
    # Without docker on PATH the release stops before any work and names the workflow to run.
    path_with(None)
    with pytest.raises(EngineError, match=r"docker is not installed here; releases run in CI.*runtime-release\.yml"):
        Buildx().preflight(None)


def test_workspace_stub_that_exits_127_is_refused(path_with: PathWith) -> None:
    # The workspace's hard-walled docker stub (exit 127) is named as such.
    path_with("exit 127\n")
    with pytest.raises(EngineError, match=r"workspace stub \(exit 127\)"):
        Buildx().preflight(None)


def test_missing_buildx_plugin_is_refused(path_with: PathWith) -> None:
    # A docker CLI without the buildx plugin is refused with the CLI's own words.
    path_with("echo \"docker: 'buildx' is not a docker command.\" >&2\nexit 1\n")
    with pytest.raises(EngineError, match=r"docker buildx is missing \(docker: 'buildx' is not a docker command\.\)"):
        Buildx().preflight(None)


def test_docker_driver_without_the_containerd_store_cannot_export_a_cache(path_with: PathWith) -> None:
    # The docker driver on the classic image store cannot export a registry cache: refused before building.
    path_with(
        'if [ "$1" = buildx ]; then printf "Name:   default\\nDriver: docker\\n"; exit 0; fi\n'
        'echo \'[["Backing Filesystem","extfs"]]\'\n'
    )
    with pytest.raises(EngineError, match=r"builder default \(docker driver\) cannot export a registry cache"):
        Buildx().preflight(None)


def test_docker_container_builder_passes_and_is_named(path_with: PathWith) -> None:
    # A docker-container builder needs no containerd store; preflight returns the builder's own name, and its
    # connections (in the BuildKit container's network namespace) are not seen here.
    path_with('printf "Name:   shared\\nDriver: docker-container\\nNodes:\\nName:   shared0\\n"\n')
    engine = Buildx()
    assert engine.preflight("shared") == "shared"
    assert engine.sees_cache_traffic(None) is False


def test_the_docker_driver_of_the_local_engine_shows_its_cache_traffic(path_with: PathWith) -> None:
    # The docker driver with the containerd store passes, and its engine's connections are this host's.
    path_with(
        'if [ "$1" = buildx ]; then printf "Name:   default\\nDriver: docker\\n"; exit 0; fi\n'
        'echo \'[["driver-type","io.containerd.snapshotter.v1"]]\'\n'
    )
    engine = Buildx()
    assert engine.preflight(None) == "default"
    assert engine.sees_cache_traffic(None) is True


def test_unknown_builder_is_a_configuration_error(path_with: PathWith) -> None:
    # --builder naming no builder is bad configuration (exit 2), not an engine failure.
    from release.errors import ConfigError

    path_with('if [ "$1" = buildx ]; then echo \'ERROR: no builder "nosuch" found\' >&2; exit 1; fi\n')
    with pytest.raises(ConfigError, match=r"'nosuch': ERROR: no builder \"nosuch\" found"):
        Buildx().preflight("nosuch")


def test_docker_28_without_buildx_and_daemon_names_both_and_the_way_out(path_with: PathWith) -> None:
    # docker 28's words for a missing plugin ("unknown command", then "Run 'docker --help'") and no daemon at the
    # default socket: both causes are named, with the way out, instead of docker's last line.
    path_with(
        'if [ "$1" = buildx ]; then printf "docker: unknown command: docker buildx\\n\\n'
        "Run 'docker --help' for more information\\n\" >&2; exit 1; fi\n"
        'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2\n'
        "echo null; exit 1\n"
    )
    with pytest.raises(EngineError) as caught:
        Buildx().preflight(None)
    assert str(caught.value).startswith(
        "docker buildx is missing (docker: unknown command: docker buildx) and no Docker daemon answers at "
        "unix:///var/run/docker.sock; "
    )
    assert 'eval "$(fractalops-release devstack up)"' in str(caught.value)


def test_kubernetes_builder_needs_no_local_daemon(path_with: PathWith) -> None:
    # A kubernetes builder works without a local daemon: `docker info` failing does not refuse it.
    path_with(
        'if [ "$1" = buildx ]; then printf "Name:   shared\\nDriver: kubernetes\\n"; exit 0; fi\n'
        'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2\n'
        "echo null; exit 1\n"
    )
    assert Buildx().preflight("shared") == "shared"
