"""Smoke build, then promotion, on the local stack with a real git clone and a bare remote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from ruamel.yaml import YAML

from release.imageref import parse_pinned_ref

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack

ROOT = Path(__file__).resolve().parents[2]
VALUES = {
    "api": "platform/k8s/apps/fractalops-api/values.yaml",
    "worker": "platform/k8s/apps/fractalops-worker/values.yaml",
}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env={**os.environ, **GIT_ENV}
    ).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, Path]:
    """A bare remote holding this repository's HEAD (with the working tree's ops/ and platform/ files) and a clone of it."""
    work = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    git(work, "checkout", "-q", "-B", "main")  # the remote's branch is main whatever branch the suite runs on
    for folder in ("ops", "platform"):
        subprocess.run(["cp", "-a", f"{ROOT / folder}/.", str(work / folder)], check=True)
    git(work, "add", "-A")
    if git(work, "status", "--porcelain"):
        git(work, "commit", "-qm", "working tree of the repository under test")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(remote)], check=True)
    local = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(local)], check=True)
    return local, remote


def run(stack: Devstack, cwd: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the toolkit in `cwd` (its repository root) as a person outside CI would."""
    full = {
        k: v for k, v in os.environ.items() if k not in {"CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"}
    }
    full.update(stack.env)
    full.update(GIT_ENV)
    full.update(
        {
            "FRACTALOPS_TOPOLOGY": str(stack.topology),
            "FRACTALOPS_BUILD_EVENTS_FILE": str(tmp_path / "events.jsonl"),
            "FRACTALOPS_EVENTS_DIR": str(tmp_path / "records"),
            "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1",
            "FRACTALOPS_CACHE_BRANCH": "itest-gitops",
        }
    )
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "release", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def pinned(clone: Path, target: str) -> dict[str, str]:
    image = YAML(typ="safe").load((clone / VALUES[target]).read_text())["image"]
    return {"repository": image["repository"], "digest": image["digest"]}


def test_smoke_build_then_promote_pins_the_digests_in_one_pushed_commit(
    devstack: Devstack, clone: tuple[Path, Path], tmp_path: Path
) -> None:
    # A smoke build leaves git alone and previews the diff; promoting its image_refs lands one commit on the remote.
    local, remote = clone
    before = git(remote, "rev-parse", "main")
    smoke = run(devstack, local, tmp_path, "runtime", FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="0")
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    refs = dict(
        zip(("api", "worker"), [line.removeprefix("image_ref=") for line in smoke.stdout.splitlines()], strict=True)
    )
    assert git(local, "status", "--porcelain") == ""
    assert git(remote, "rev-parse", "main") == before
    assert "promotion preview" in smoke.stderr and str(parse_pinned_ref(refs["api"]).digest) in smoke.stderr

    outputs = tmp_path / "github_output"
    promoted = run(
        devstack,
        local,
        tmp_path,
        "promote",
        f"api={refs['api']}",
        f"worker={refs['worker']}",
        "--json",
        GITHUB_OUTPUT=str(outputs),
    )
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert outputs.read_text().splitlines() == [f"image_ref_api={refs['api']}", f"image_ref_worker={refs['worker']}"]
    record = json.loads(promoted.stdout)
    after = git(remote, "rev-parse", "main")
    assert git(remote, "rev-list", "--count", f"{before}..{after}") == "1"
    assert record["commit"] == after
    assert record["outcome"] == "pushed"
    assert record["images"] == refs
    changed = set(git(remote, "diff", "--name-only", before, after).splitlines())
    assert changed == set(VALUES.values())
    git(local, "pull", "-q", "--ff-only")
    for target, text in refs.items():
        ref = parse_pinned_ref(text)
        assert pinned(local, target) == {"repository": ref.repository, "digest": ref.digest}
    assert git(local, "status", "--porcelain") == ""


def test_release_with_gitops_on_builds_and_promotes_in_one_run(
    devstack: Devstack, clone: tuple[Path, Path], tmp_path: Path
) -> None:
    # FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS=1: the built digests land in one commit on the remote.
    local, remote = clone
    before = git(remote, "rev-parse", "main")
    result = run(devstack, local, tmp_path, "runtime", "--json", FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    refs = {t["target"]: t["image_ref"] for t in document["targets"]}
    after = git(remote, "rev-parse", "main")
    assert git(remote, "rev-list", "--count", f"{before}..{after}") == "1"
    message = git(remote, "log", "-1", "--format=%B", after)
    assert refs["api"] in message and refs["worker"] in message
    assert document["gitops"]["commit"] == after
    git(local, "pull", "-q", "--ff-only")
    for target, text in refs.items():
        assert pinned(local, target)["digest"] == parse_pinned_ref(text).digest
