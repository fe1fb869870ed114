"""A shallow source clone (CI's fetch-depth: 1): the monotonic guard deepens it on demand or says what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from release.errors import GitError, GuardRefusal
from release.gitops.promote import promote

from .conftest import GitOpsWorld, git, push_options

API = "platform/k8s/apps/fractalops-api/values.yaml"


def shallow_source(world: GitOpsWorld) -> tuple[Path, Path]:
    """(bare remote of the source repository, a `--depth 1` clone of it), as actions/checkout makes by default."""
    bare = world.root / "source.git"
    git(world.root, "clone", "-q", "--bare", str(world.source), str(bare))
    shallow = world.root / "shallow"
    git(world.root, "clone", "-q", "--depth", "1", f"file://{bare}", str(shallow))
    assert git(shallow, "rev-parse", "--is-shallow-repository").strip() == "true"
    assert git(shallow, "rev-list", "--count", "HEAD").strip() == "1"
    return bare, shallow


def test_shallow_source_clone_is_deepened_to_check_the_pinned_commit(world: GitOpsWorld, topology: Any) -> None:
    # The pinned commit is not in a depth-1 clone: the guard fetches the history it needs and the promotion lands.
    _, shallow = shallow_source(world)
    latest = len(world.commits) - 1
    result = promote(
        {"api": world.image("api", latest)},
        repo_root=world.clone,
        topology=topology,
        source_repo=shallow,
        **push_options(),
    )
    assert result.pushed
    monotonic = next(d for d in result.decisions if d.guard == "monotonic")
    assert monotonic.verdict == "pass"
    assert "descends from the pinned" in monotonic.detail
    assert world.commits[latest] in world.remote_file(API)
    assert git(shallow, "cat-file", "-t", world.commits[0]).strip() == "commit"


def test_shallow_clone_that_cannot_be_deepened_gets_a_clear_message(world: GitOpsWorld, topology: Any) -> None:
    # When the history cannot be fetched, the error says the clone is shallow and how to fix the checkout;
    # it is not a guard refusal dressed as a policy decision. --force still overrides it on purpose.
    bare, shallow = shallow_source(world)
    shutil.rmtree(bare)
    before = git(world.remote, "rev-parse", "main")
    image = world.image("api", len(world.commits) - 1)
    with pytest.raises(GitError) as caught:
        promote({"api": image}, repo_root=world.clone, topology=topology, source_repo=shallow, **push_options())
    message = str(caught.value)
    assert not isinstance(caught.value, GuardRefusal)
    assert "shallow" in message and "fetch-depth: 0" in message and world.commits[0][:12] in message
    assert "\n" not in message
    assert git(world.remote, "rev-parse", "main") == before
    forced = promote(
        {"api": image}, repo_root=world.clone, topology=topology, source_repo=shallow, force=True, **push_options()
    )
    assert forced.pushed
    assert any(d.guard == "monotonic" and d.verdict == "forced" for d in forced.decisions)
