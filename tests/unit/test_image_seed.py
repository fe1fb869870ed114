"""What the devstack seeds for the images: read from the Dockerfile and the app folder, pinned, mapped to a mirror."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from release import settings
from release.build.inputs import ReleaseInputs, ReleaseRequest
from release.build.plan import PACKAGE_BUILD_ARGS, make_plan
from release.devstack.packages import (
    CONTAINERS,
    image_spec,
    parse_print_uris,
    pip_platform_args,
    python_version_of,
)
from release.errors import ConfigError, OperationError
from release.targets import load_targets
from release.topology.env import render_env
from release.topology.load import load_topology

ROOT = Path(__file__).resolve().parents[2]


def test_the_seed_is_what_the_dockerfile_and_the_app_folder_declare() -> None:
    # The base image is the Dockerfile's BASE_IMAGE default; packages and requirements come from app/.
    spec = image_spec()
    dockerfile = (CONTAINERS / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={spec.base_image}\n" in dockerfile
    assert (spec.base_repository, spec.base_tag) == ("library/debian", f"{spec.suite}-slim")
    assert {"python3", "python3-venv", "tini"} <= set(spec.debian_packages)
    assert [name for name, _ in spec.requirements] == ["api.txt", "base.txt", "worker.txt"]


def test_every_requirement_is_pinned_exactly() -> None:
    # A build must resolve the same wheels the devstack seeded: every requirement line is name==version.
    for name, text in image_spec().requirements:
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        for line in filter(None, lines):
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.+!-]*", line), f"{name}: {line!r} is not pinned"


def test_dockerfile_declares_the_package_build_args_in_every_stage_that_installs() -> None:
    # The driver passes the package URLs as build args; ARG scope ends with a stage, so each installing stage names them.
    text = (CONTAINERS / "Dockerfile").read_text()
    for stage in re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]:
        if "pip-install" in stage:
            assert "ARG FRACTALOPS_PIP_INDEX_URL" in stage, stage.splitlines()[0]
        if "apt-install" in stage:
            assert "ARG FRACTALOPS_APT_CACHE_URL" in stage, stage.splitlines()[0]


def test_a_base_image_the_devstack_cannot_make_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    # Only debian:<suite>-slim can be made offline; anything else is exit 2 naming the Dockerfile and the value.
    copy = tmp_path / "fractalops"
    shutil.copytree(CONTAINERS, copy)
    dockerfile = copy / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(f"BASE_IMAGE={image_spec().base_image}", "BASE_IMAGE=alpine:3.20")
    )
    with pytest.raises(ConfigError, match=r"Dockerfile: BASE_IMAGE default 'alpine:3.20' is not debian:<suite>-slim"):
        image_spec(copy)


def test_print_uris_map_to_pool_paths_with_decoded_names() -> None:
    # apt's URL-encoded archive URLs become the pool paths a mirror serves ('+' and '~' literal on disk).
    text = (
        "'http://deb.example/debian/pool/main/p/python3.13/python3.13_3.13.5-2%2bdeb13u5_amd64.deb' "
        "python3.13_3.13.5-2+deb13u5_amd64.deb 757492 MD5Sum:9b38\n"
        "'http://deb.example/debian/pool/main/e/expat/libexpat1_2.9.0-1%7edeb13u1_amd64.deb' x.deb 1 MD5Sum:bd\n"
    )
    downloads = parse_print_uris(text, "http://deb.example/debian/")
    assert [d.pool_path for d in downloads] == [
        "pool/main/p/python3.13/python3.13_3.13.5-2+deb13u5_amd64.deb",
        "pool/main/e/expat/libexpat1_2.9.0-1~deb13u1_amd64.deb",
    ]
    with pytest.raises(OperationError, match="not under the archive"):
        parse_print_uris("'http://elsewhere/pool/x.deb' x.deb 1 MD5Sum:0\n", "http://deb.example/debian")


def test_python_version_and_wheel_platform_follow_the_image_not_the_host() -> None:
    # The wheels are chosen for the image's Debian python3 (3.13 on trixie), whatever runs the devstack.
    assert python_version_of("3.13.5-1") == "3.13"
    assert python_version_of("1:3.11.2-1+b1") == "3.11"
    args = pip_platform_args("3.13", "amd64")
    assert args[:7] == ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.13", "--abi", "cp313"]
    assert "manylinux2014_x86_64" in args and "manylinux_2_28_x86_64" in args


def test_the_release_plan_passes_the_package_urls_from_the_topology_to_every_target(tmp_path: Path) -> None:
    # make_plan gives each target FRACTALOPS_APT_CACHE_URL and FRACTALOPS_PIP_INDEX_URL as render-env renders them,
    # at the topology's packages_host when it has one (the devstack's bridge), else at the Nexus service.
    topology = load_topology(ROOT / "ops/topology/fractalops.yaml")
    local = topology.model_copy(update={"nexus": topology.nexus.model_copy(update={"packages_host": "10.213.5.1"})})
    for topo, host in ((topology, "nexus.nexus.svc"), (local, "10.213.5.1")):
        targets = load_targets(ROOT / "ops/containers/fractalops/targets.yaml")
        inputs = ReleaseInputs(
            request=ReleaseRequest(),
            loaded=settings.load({}),
            update_gitops=False,
            root=ROOT,
            topology=topo,
            configured=targets,
            targets=tuple(targets.values()),
            source_commit="0" * 40,
            source_url=None,
            dirty=(),
            branch="main",
            platforms=(),
            sink=None,
            run_stamp="t",
        )
        plan = make_plan(inputs, tmp_path)
        env = render_env(topo)
        for target in plan.targets:
            args = {k: v for k, v in target.request.build_args.items() if k in PACKAGE_BUILD_ARGS}
            assert args == {name: env[name] for name in PACKAGE_BUILD_ARGS}
            assert all(f"://{host}:" in url for url in args.values()), args
