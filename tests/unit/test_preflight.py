"""Preflight refusals that a real engine cannot show: each docker here is a small stand-in script, named as such."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from release.adapters.buildx import BuildRequest, Buildx, local_platform
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


COUNTING = (
    'printf "%s\\n" "$*" >> "${0%/*}/asked"\n'
    'if [ "$1" = buildx ]; then printf "Name:   ${3:-default}\\nDriver: docker-container\\n"; exit 0; fi\n'
    "echo null; echo '{\"Plugins\":[]}'\n"
)


def test_questions_asked_early_are_answered_once(path_with: PathWith, tmp_path: Path) -> None:
    # The questions asked as the command starts are the ones preflight takes: docker is asked each question once.
    path_with(COUNTING)
    engine = Buildx()
    engine.ask("shared")
    assert engine.preflight("shared") == "shared"
    assert sorted((tmp_path / "bin/asked").read_text().splitlines()) == [
        "buildx inspect shared",
        'info --format {{json .DriverStatus}}{{"\\n"}}{{json .ClientInfo}}',
    ]


def test_questions_asked_early_about_another_builder_are_asked_again(path_with: PathWith, tmp_path: Path) -> None:
    # The early guess (flag or FRACTALOPS_BUILDER) is only a head start: the builder the settings name is inspected.
    path_with(COUNTING)
    engine = Buildx()
    engine.ask(None)
    assert engine.preflight("shared") == "shared"
    inspected = [line for line in (tmp_path / "bin/asked").read_text().splitlines() if line.startswith("buildx")]
    assert sorted(inspected) == ["buildx inspect", "buildx inspect shared"]


def plugin_world(tmp_path: Path, path_with: PathWith, plugin_err: str = "") -> Path:
    """A stand-in docker that lists a stand-in buildx plugin (a script logging its arguments); the plugin's path."""
    plugin = tmp_path / "plugins/docker-buildx"
    plugin.parent.mkdir()
    plugin.write_text('#!/bin/sh\necho "$*" >> "${0%/*}/ran"\n')
    plugin.chmod(0o755)
    listed = json.dumps(
        {"Plugins": [{"Name": "buildx", "Path": str(plugin), **({"Err": plugin_err} if plugin_err else {})}]}
    )
    path_with(
        'if [ "$1" = buildx ]; then [ "$2" = inspect ] || { echo "docker $*" >> '
        + f'"{plugin.parent}/ran"; exit 0; }}; '
        'printf "Name:   shared\\nDriver: docker-container\\n"; exit 0; fi\n'
        f"echo null; echo '{listed}'\n"
    )
    return plugin


def build_request(tmp_path: Path) -> BuildRequest:
    """A minimal build request."""
    return BuildRequest(
        name="api", context=tmp_path, dockerfile=tmp_path / "Dockerfile", stage="api", tags=("r/api:t",),
        build_args={}, labels={}, cache_from=(), cache_to=None, platforms=(), builder="shared",
        metadata_file=tmp_path / "meta.json",
    )  # fmt: skip


def test_builds_run_the_buildx_plugin_docker_lists(path_with: PathWith, tmp_path: Path) -> None:
    # After preflight, a build runs the plugin binary `docker info` lists, with the dry run's arguments after it.
    plugin = plugin_world(tmp_path, path_with)
    engine = Buildx()
    engine.preflight("shared")
    request = build_request(tmp_path)
    with pytest.raises(EngineError, match="no readable metadata file"):  # the stand-in plugin writes none
        engine.build(request, lambda line: None)
    assert (plugin.parent / "ran").read_text().split() == request.argv()[2:]
    assert request.argv()[:3] == ["docker", "buildx", "build"]


def test_a_plugin_docker_reports_broken_is_reached_through_docker(path_with: PathWith, tmp_path: Path) -> None:
    # A plugin docker lists with an error is not run directly: `docker buildx` says what is wrong with it.
    plugin = plugin_world(tmp_path, path_with, plugin_err="invalid metadata")
    engine = Buildx()
    engine.preflight("shared")
    with pytest.raises(EngineError):
        engine.build(build_request(tmp_path), lambda line: None)
    assert (plugin.parent / "ran").read_text().startswith("docker buildx build --push")


def test_the_native_platform_is_the_first_the_builder_lists_else_this_machines(path_with: PathWith) -> None:
    # `buildx inspect` lists a node's platforms, the native one first (`*`: set by hand); an inactive
    # docker-container builder lists none until it boots, and runs here: this machine's platform is its.
    path_with(
        'if [ "$1" = buildx ]; then printf "Name: shared\\nDriver: remote\\n\\nNodes:\\nName: shared0\\n'
        'Platforms: linux/arm64*, linux/arm/v7\\n"; exit 0; fi\n'
        "echo null\n"
    )
    engine = Buildx()
    engine.preflight("shared")
    assert engine.native_platform() == "linux/arm64"
    path_with('if [ "$1" = buildx ]; then printf "Name: ci\\nDriver: docker-container\\n"; exit 0; fi\necho null\n')
    engine = Buildx()
    engine.preflight("ci")
    assert engine.native_platform() == local_platform() is not None
