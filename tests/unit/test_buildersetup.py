"""`release.buildersetup`: the planned `docker buildx create` command and the buildkitd.toml it writes."""

from __future__ import annotations

import stat
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from release.buildersetup import BuilderPlan, RemoteTLS, create_builder, plan_builder, run_docker
from release.errors import EngineError, UsageError
from release.imageref import parse_image_ref
from release.topology.load import load_topology
from release.topology.model import Builder, Topology

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO / "ops" / "topology" / "fractalops.yaml")


def group_endpoint(topology: Topology, via: str) -> str:
    host = topology.nexus.cluster_host if via == "service" else topology.registry_cache.host_ip
    return f"{host}:{topology.nexus.docker_group_port}"


def test_kubernetes_plan_argv(topology: Topology, tmp_path: Path) -> None:
    # The kubernetes driver: replicas and namespace in one --driver-opt, the rendered config, bootstrap.
    config = tmp_path / "buildkitd.toml"
    plan = plan_builder(topology, "fractalops", "kubernetes", replicas=3, namespace="buildkit", config_path=config)
    assert plan.argv == (
        "docker", "buildx", "create",
        "--name", "fractalops",
        "--driver", "kubernetes",
        "--driver-opt", "replicas=3,namespace=buildkit",
        "--buildkitd-config", str(config),
        "--bootstrap",
    )  # fmt: skip
    assert plan.via == "service"
    assert plan.config_path == config


def test_docker_container_plan_argv_with_use(topology: Topology, tmp_path: Path) -> None:
    # docker-container: buildx's BuildKit image from the docker-group as Nexus is reached (by ClusterIP by default);
    # --use is appended when asked.
    config = tmp_path / "b.toml"
    plan = plan_builder(topology, "local-ci", "docker-container", config_path=config, use=True)
    image = f"{group_endpoint(topology, 'clusterip')}/moby/buildkit:buildx-stable-1"
    assert plan.argv == (
        "docker", "buildx", "create", "--name", "local-ci", "--driver", "docker-container",
        "--buildkitd-config", str(config), "--driver-opt", f"image={image}", "--bootstrap", "--use",
    )  # fmt: skip
    assert plan.via == "clusterip"
    assert f"docker login {group_endpoint(topology, 'clusterip')}" in plan.render()


@pytest.mark.parametrize("via", ["service", "clusterip"])
def test_docker_container_image_comes_from_the_group_connector_the_config_mirrors_to(
    topology: Topology, tmp_path: Path, via: str
) -> None:
    # The image's registry is the docker.io mirror of the rendered buildkitd.toml (same host, same credentials).
    plan = plan_builder(topology, "b", "docker-container", config_path=tmp_path / "c.toml", via=via)
    assert plan.config_text is not None
    mirror = tomllib.loads(plan.config_text)["registry"]["docker.io"]["mirrors"][0]
    opt = plan.argv[plan.argv.index("--driver-opt") + 1]
    assert opt == f"image={mirror}/moby/buildkit:buildx-stable-1"


def test_docker_container_image_can_be_named(topology: Topology, tmp_path: Path) -> None:
    # --image replaces the default (e.g. docker.io's own, for an engine that reaches it).
    plan = plan_builder(
        topology, "b", "docker-container", config_path=tmp_path / "c.toml", image="moby/buildkit:v0.13.2"
    )
    assert plan.argv[plan.argv.index("--driver-opt") :][:2] == ("--driver-opt", "image=moby/buildkit:v0.13.2")


def test_remote_plan_has_endpoint_and_no_config(topology: Topology) -> None:
    # remote: the endpoint is the last argument; no --buildkitd-config (the remote daemon has its own).
    plan = plan_builder(topology, "shared", "remote", endpoint="tcp://buildkitd.buildkit.svc:1234", bootstrap=False)
    assert plan.argv == (
        "docker",
        "buildx",
        "create",
        "--name",
        "shared",
        "--driver",
        "remote",
        "tcp://buildkitd.buildkit.svc:1234",
    )
    assert plan.config_path is None
    assert plan.config_text is None
    assert any("render-buildkitd" in note for note in plan.notes)


@pytest.mark.parametrize("via", ["service", "clusterip"])
def test_config_text_mirrors_and_http(topology: Topology, tmp_path: Path, via: str) -> None:
    # The rendered TOML mirrors docker.io and ghcr.io to the docker-group and speaks plain HTTP to Nexus.
    plan = plan_builder(topology, "b", "docker-container", config_path=tmp_path / "c.toml", via=via)
    assert plan.config_text is not None
    data = tomllib.loads(plan.config_text)
    group = group_endpoint(topology, via)
    assert data["registry"]["docker.io"] == {"mirrors": [group]}
    assert data["registry"]["ghcr.io"] == {"mirrors": [group]}
    assert data["registry"][group] == {"http": True}
    if via == "service":
        internal = parse_image_ref(topology.registry_cache.buildcache_ref).registry
    else:
        internal = f"{topology.registry_cache.host_ip}:{topology.nexus.docker_internal_port}"
    assert data["registry"][internal] == {"http": True}


@pytest.mark.parametrize(
    ("driver", "kwargs", "message"),
    [
        ("podman", {"config_path": Path("x")}, "not one of"),
        ("remote", {"endpoint": "buildkitd:1234"}, "remote driver needs"),
        ("remote", {"endpoint": "tcp://b:1234", "config_path": Path("x")}, "no buildkitd config"),
        ("kubernetes", {}, "needs a path"),
        ("kubernetes", {"config_path": Path("x"), "replicas": 0}, "at least 1"),
        ("kubernetes", {"config_path": Path("x"), "namespace": "Build_Kit"}, "namespace"),
        ("docker-container", {"config_path": Path("x"), "endpoint": "tcp://b:1"}, "remote driver only"),
        ("kubernetes", {"config_path": Path("x"), "image": "moby/buildkit:v0.13.2"}, "docker-container driver only"),
        ("remote", {"endpoint": "tcp://b:1", "image": "moby/buildkit:v0.13.2"}, "docker-container driver only"),
    ],
)
def test_bad_requests_are_usage_errors(topology: Topology, driver: str, kwargs: dict[str, Any], message: str) -> None:
    # Wrong combinations fail before anything runs, with exit code 2.
    with pytest.raises(UsageError, match=message):
        plan_builder(topology, "b", driver, **kwargs)


def test_remote_plan_takes_the_endpoint_from_the_topology(topology: Topology) -> None:
    # No --endpoint: the topology's shared BuildKit is the endpoint, and the dry-run text says where it came from.
    assert topology.builder is not None
    plan = plan_builder(topology, "shared", "remote")
    assert plan.argv[-1] == topology.builder.endpoint == "tcp://buildkit.fractalops.svc:1234"
    assert "note: endpoint tcp://buildkit.fractalops.svc:1234 is the topology's shared BuildKit" in plan.render()


def test_given_endpoint_wins_over_the_topology(topology: Topology, tmp_path: Path) -> None:
    # --endpoint names another buildkitd: the topology's endpoint and server name are not used.
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with_name = topology.model_copy(update={"builder": Builder(endpoint="tcp://b.svc:1234", tls_servername="x.svc")})
    plan = plan_builder(with_name, "b", "remote", endpoint="tcp://10.0.0.9:1234", tls=RemoteTLS(ca), bootstrap=False)
    assert plan.argv[-3:] == ("--driver-opt", f"cacert={ca}", "tcp://10.0.0.9:1234")
    assert not any("builder.endpoint" in note for note in plan.notes)


def test_remote_plan_takes_the_server_name_from_the_topology_unless_given(topology: Topology, tmp_path: Path) -> None:
    # builder.tls_servername goes with the topology's endpoint; --tls-servername, when given, wins.
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    shared = Builder(endpoint="tcp://10.0.0.9:1234", tls_servername="buildkit.fractalops.svc")
    with_name = topology.model_copy(update={"builder": shared})
    taken = plan_builder(with_name, "b", "remote", tls=RemoteTLS(cacert=ca), bootstrap=False)
    assert taken.argv[-3:] == ("--driver-opt", f"cacert={ca},servername=buildkit.fractalops.svc", "tcp://10.0.0.9:1234")
    given = plan_builder(with_name, "b", "remote", tls=RemoteTLS(cacert=ca, servername="other.svc"), bootstrap=False)
    assert given.argv[-2] == f"cacert={ca},servername=other.svc"


def test_remote_plan_without_endpoint_or_topology_builder_is_a_usage_error(topology: Topology) -> None:
    # Neither --endpoint nor a builder section: exit 2 naming both ways to give one.
    without = topology.model_copy(update={"builder": None})
    with pytest.raises(UsageError, match=r"--endpoint tcp://HOST:PORT, or a shared BuildKit in the topology") as caught:
        plan_builder(without, "b", "remote")
    assert caught.value.exit_code == 2


def test_bad_name_is_a_usage_error(topology: Topology) -> None:
    # A builder name must be usable on the docker command line.
    with pytest.raises(UsageError, match="--name"):
        plan_builder(topology, "-rm", "docker-container", config_path=Path("x"))


class FakeRunner:
    """Fake engine: records the commands it was given (no engine runs in unit tests)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(tuple(argv))
        return ""


def test_create_writes_config_then_runs(topology: Topology, tmp_path: Path) -> None:
    # create_builder writes the buildkitd.toml (mode 0644, parents made) and runs exactly the planned argv.
    config = tmp_path / "nested" / "buildkitd.toml"
    plan = plan_builder(topology, "b", "kubernetes", config_path=config)
    fake = FakeRunner()
    create_builder(plan, run=fake)
    assert fake.calls == [plan.argv]
    assert config.read_text() == plan.config_text
    assert stat.S_IMODE(config.stat().st_mode) == 0o644


def test_create_remote_writes_nothing(topology: Topology, tmp_path: Path) -> None:
    # A remote builder is only registered: no file is written.
    plan = plan_builder(topology, "b", "remote", endpoint="tcp://b:1234")
    fake = FakeRunner()
    create_builder(plan, run=fake)
    assert fake.calls == [plan.argv]
    assert list(tmp_path.iterdir()) == []


def test_run_docker_failure_is_engine_error() -> None:
    # A failing command becomes an EngineError naming the command and the last stderr line.
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('noise\\nboom\\n'); sys.exit(3)"]
    with pytest.raises(EngineError, match=r"failed: boom$"):
        run_docker(failing)


def test_run_docker_missing_binary_is_engine_error() -> None:
    # A missing engine binary is an EngineError, not a traceback.
    with pytest.raises(EngineError, match="not installed"):
        run_docker(["/nonexistent/docker", "buildx", "ls"])


def test_render_shows_file_command_and_notes(topology: Topology, tmp_path: Path) -> None:
    # The dry-run text names the file, the command and the notes.
    plan: BuilderPlan = plan_builder(topology, "b", "kubernetes", config_path=tmp_path / "k.toml")
    text = plan.render()
    assert text.splitlines()[0].startswith(f"write {tmp_path / 'k.toml'}")
    assert "docker buildx create --name b --driver kubernetes" in text
    assert "note: the kubernetes driver needs a kubeconfig" in text
