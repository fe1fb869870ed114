"""Reuse on the local stack: a release whose inputs are unchanged takes the image at its tag instead of building.

Each test has a git repository of its own (with a bare remote), its own image repositories and its own base image in
the upstream registry behind the pull-through mirror, so what is at a tag is only ever this test's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from gitops.conftest import GIT_ENV, git
from ruamel.yaml import YAML

from release.adapters.registry import RegistryClient
from release.imageref import parse_pinned_ref

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = """\
FROM {base} AS base
COPY app/ /opt/app/
FROM base AS api
RUN cat /opt/app/code.txt > /opt/role
FROM base AS worker
RUN cat /opt/app/code.txt > /opt/role
"""


@dataclass
class Project:
    """A repository with the two targets building `ctx/` from this test's base image, and its bare remote."""

    stack: Devstack
    root: Path
    remote: Path
    base: str  # the FROM line's reference (docker.io, through the mirror)
    upstream_ref: str  # where the test pushes that base (the upstream registry the mirror proxies)
    events: Path

    def push_base(self, version: str) -> None:
        """Push a new image under the base's tag in the upstream registry (the base image drifts)."""
        folder = self.root.parent / f"base-{version}"
        folder.mkdir()
        (folder / "Dockerfile").write_text(f"FROM busybox:1.36\nRUN echo {version} > /base-version\n")
        built = self.stack.docker(["buildx", "build", "--push", "--tag", self.upstream_ref, str(folder)])
        assert built.returncode == 0, built.stderr[-2000:]

    def release(self, **env: str) -> subprocess.CompletedProcess[str]:
        """`runtime --json` in the repository, as a person outside CI runs it."""
        full = {k: v for k, v in os.environ.items() if k not in {"CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT"}}
        full.update(self.stack.env)
        full.update(GIT_ENV)
        full.update(
            {
                "FRACTALOPS_TOPOLOGY": str(self.stack.topology),
                "FRACTALOPS_REPO_ROOT": str(self.root),
                "FRACTALOPS_TARGETS": str(self.root / "targets.yaml"),
                "FRACTALOPS_BUILD_EVENTS_FILE": str(self.events),
                "FRACTALOPS_EVENTS_DIR": str(self.root.parent / "records"),
                "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1",
                "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS": "0",
                "FRACTALOPS_CACHE_BRANCH": f"itest-reuse-{uuid.uuid4().hex[:6]}",
                **env,
            }
        )
        return subprocess.run(
            [sys.executable, "-m", "release", "runtime", "--json"],
            cwd=self.root,
            env=full,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


@pytest.fixture
def project(devstack: Devstack, tmp_path: Path) -> Project:
    """A committed repository pushed to a bare remote; its base image v1 pushed upstream."""
    name = f"fx-reuse-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(root)], check=True)  # the history the values files pin
    git(root, "checkout", "-q", "-B", "main")
    for folder in ("ops", "platform"):  # the working tree's versions of them
        subprocess.run(["cp", "-a", f"{ROOT / folder}/.", str(root / folder)], check=True)
    (root / "ctx/app").mkdir(parents=True)
    (root / "ctx/Dockerfile").write_text(DOCKERFILE.format(base=f"{name}-base:1"))
    (root / "ctx/app/code.txt").write_text("code v1\n")
    yaml = YAML()
    targets = yaml.load((ROOT / "ops/containers/fractalops/targets.yaml").read_text())
    for target_name, target in targets["targets"].items():
        target.update({"context": "ctx", "image": f"{name}-{target_name}"})
    with (root / "targets.yaml").open("w") as handle:
        yaml.dump(targets, handle)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "the project under test")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(root), str(remote)], check=True)
    git(root, "remote", "set-url", "origin", str(remote))
    git(root, "fetch", "-q", "origin")
    git(root, "branch", "-q", "--set-upstream-to=origin/main")
    upstream = f"127.0.0.1:{devstack.ports.upstream}/library/{name}-base:1"
    made = Project(devstack, root, remote, f"{name}-base:1", upstream, tmp_path / "events.jsonl")
    made.push_base("v1")
    return made


def refs(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each target's image_ref from a --json run (which must have succeeded)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {t["target"]: t["image_ref"] for t in json.loads(proc.stdout)["targets"]}


def reused(proc: subprocess.CompletedProcess[str]) -> dict[str, bool]:
    """Each target's `reused` flag from a --json run."""
    return {t["target"]: t["reused"] for t in json.loads(proc.stdout)["targets"]}


def layers(image_ref: str) -> list[str]:
    """The layer digests of a released image, as the hosted registry holds it."""
    ref = parse_pinned_ref(image_ref)
    manifest = RegistryClient(ref.registry, scheme="http").image_manifest(ref)
    return [layer["digest"] for layer in manifest["layers"]]


def last_events(path: Path, count: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[-count:]]


def test_promotion_takes_the_image_the_smoke_build_pushed_instead_of_building_again(project: Project) -> None:
    # FRACTALOPS_REUSE=promote (the default): the smoke build builds; the promotion of the same commit pins its digests.
    smoke = project.release()
    smoke_refs = refs(smoke)
    assert reused(smoke) == {"api": False, "worker": False}
    again = project.release()  # a smoke build always builds under the default
    assert reused(again) == {"api": False, "worker": False}
    promoted = project.release(FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1")
    promoted_refs = refs(promoted)
    assert reused(promoted) == {"api": True, "worker": True}
    assert promoted_refs == refs(again)
    assert "reusing" in promoted.stderr and "built from the same inputs" in promoted.stderr
    for event in last_events(project.events, 2):
        assert event["reused"] is True and event["cache_import"] == "unused" and event["result"] == "ok"
    records = (project.root.parent / "records/releases.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["reused"] == ["api", "worker"]
    git(project.root, "pull", "-q", "--ff-only")
    for target, text in promoted_refs.items():
        values = YAML(typ="safe").load(
            (project.root / f"platform/k8s/apps/fractalops-{target}/values.yaml").read_text()
        )
        assert values["image"]["digest"] == parse_pinned_ref(text).digest
    assert set(smoke_refs) == {"api", "worker"}


def test_a_changed_context_file_or_a_drifted_base_image_builds_again(project: Project) -> None:
    # FRACTALOPS_REUSE=always: unchanged inputs reuse; a file's content, then the base image's digest, each rebuild.
    first = refs(project.release(FRACTALOPS_REUSE="always"))
    second = project.release(FRACTALOPS_REUSE="always")
    assert reused(second) == {"api": True, "worker": True} and refs(second) == first

    (project.root / "ctx/app/code.txt").write_text("code v2\n")  # same commit, other content (a dirty tree)
    edited = project.release(FRACTALOPS_REUSE="always")
    assert reused(edited) == {"api": False, "worker": False}, edited.stderr[-2000:]
    edited_again = project.release(FRACTALOPS_REUSE="always")
    assert reused(edited_again) == {"api": True, "worker": True} and refs(edited_again) == refs(edited)

    project.push_base("v2")  # the base's tag now names another image; the files are as they were
    drifted = project.release(FRACTALOPS_REUSE="always")
    assert reused(drifted) == {"api": False, "worker": False}, drifted.stderr[-2000:]
    assert "built from other inputs" in drifted.stderr
    for target in ("api", "worker"):  # built on the new base: its layers are not the old image's
        assert layers(refs(drifted)[target]) != layers(refs(edited)[target])


def test_reuse_never_builds_every_time(project: Project) -> None:
    # FRACTALOPS_REUSE=never: a promotion of an unchanged commit builds again.
    refs(project.release())
    promoted = project.release(FRACTALOPS_REUSE="never", FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1")
    refs(promoted)
    assert reused(promoted) == {"api": False, "worker": False}
    assert "reusing" not in promoted.stderr
