"""`release.buildersetup` against a real engine: a docker-container builder registered with the rendered config."""

from __future__ import annotations

import base64
import json
import os
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from release.buildersetup import create_builder, plan_builder, run_docker
from release.topology.buildkitd import render_buildkitd
from release.topology.load import load_topology

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack


@pytest.fixture
def builder_name(devstack: Devstack) -> Iterator[str]:
    """A fresh builder name; the builder is removed afterwards."""
    name = f"fx-test-{uuid.uuid4().hex[:8]}"
    yield name
    devstack.docker(["buildx", "rm", name])


def test_docker_container_builder_is_created_with_rendered_config(
    devstack: Devstack, builder_name: str, tmp_path: Path
) -> None:
    # create_builder registers a docker-container builder whose node carries the rendered buildkitd.toml.
    # Not bootstrapped: booting pulls moby/buildkit from Docker Hub, which this machine cannot reach.
    topology = load_topology(devstack.topology)
    config = tmp_path / "buildkitd.toml"
    plan = plan_builder(topology, builder_name, "docker-container", config_path=config, bootstrap=False)
    assert "--bootstrap" not in plan.argv
    assert plan.argv[:2] == ("docker", "buildx")
    # The stack's own docker client (first on PATH once the fixture ran) with the stack's env.
    create_builder(plan, run=lambda argv: run_docker([devstack.docker_bin, *argv[1:]]))

    inspect = devstack.docker(["buildx", "inspect", builder_name])
    assert inspect.returncode == 0, inspect.stderr
    assert f"Name:          {builder_name}" in inspect.stdout
    assert "Driver:        docker-container" in inspect.stdout

    # buildx keeps the node's files in its instance store: the config it will mount into buildkitd.
    store = (
        Path(devstack.env.get("DOCKER_CONFIG", os.path.expanduser("~/.docker"))) / "buildx" / "instances" / builder_name
    )
    instance = json.loads(store.read_text())
    stored = base64.b64decode(instance["Nodes"][0]["Files"]["buildkitd.toml"]).decode()
    assert tomllib.loads(stored) == tomllib.loads(render_buildkitd(topology, "clusterip"))
    assert tomllib.loads(config.read_text()) == tomllib.loads(stored)
