"""A promotion killed (SIGKILL) mid-write or before its push leaves a journal; the next writer run recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from release.adapters.git import GitRepo
from release.gitops.writer import journal_path, recover

from .conftest import PROMOTE_CHILD, GitOpsWorld, git, write_topology

TEST_CRASH_ENV = "FRACTALOPS_TEST_CRASH_AT"

API = "platform/k8s/apps/fractalops-api/values.yaml"
WORKER = "platform/k8s/apps/fractalops-worker/values.yaml"


def promote_in_child(
    world: GitOpsWorld, topology: Any, index: int, crash_at: str | None
) -> subprocess.CompletedProcess[str]:
    """Run a promotion of api and worker in a separate python process, optionally with the crash test hook set."""
    env = {k: v for k, v in os.environ.items() if k != TEST_CRASH_ENV}
    if crash_at:
        env[TEST_CRASH_ENV] = crash_at
    args = [
        str(world.clone),
        str(world.source),
        str(write_topology(world, topology)),
        "real",
        f"api={world.image('api', index)}",
        f"worker={world.image('worker', index)}",
    ]
    return subprocess.run(
        [sys.executable, "-c", PROMOTE_CHILD, *args], env=env, capture_output=True, text=True, timeout=60
    )


def tree_equals_head(clone: Path) -> bool:
    """Whether the working tree and index equal HEAD."""
    return git(clone, "status", "--porcelain") == ""


@pytest.mark.parametrize("crash_at", ["between-writes", "before-commit"])
def test_kill_mid_write_is_undone_by_recover(world: GitOpsWorld, topology: Any, crash_at: str) -> None:
    # After SIGKILL mid-write the tree is half-updated with a journal; recover() restores it to HEAD.
    head = git(world.clone, "rev-parse", "HEAD")
    killed = promote_in_child(world, topology, 3, crash_at)
    assert killed.returncode == -signal.SIGKILL
    repo = GitRepo(world.clone)
    assert journal_path(repo).exists()
    assert not tree_equals_head(world.clone)
    dirty = git(world.clone, "status", "--porcelain")
    assert API in dirty
    assert (WORKER in dirty) == (crash_at == "before-commit")
    restored = recover(repo)
    assert API in restored
    assert tree_equals_head(world.clone)
    assert not journal_path(repo).exists()
    assert git(world.clone, "rev-parse", "HEAD") == head
    assert git(world.remote, "rev-parse", "main") == head


def test_next_promotion_recovers_first_then_lands(world: GitOpsWorld, topology: Any) -> None:
    # The next writer command after a crash restores the journaled files, then promotes from a clean tree.
    assert promote_in_child(world, topology, 3, "between-writes").returncode == -signal.SIGKILL
    done = promote_in_child(world, topology, 4, None)
    assert done.returncode == 0, done.stderr
    assert tree_equals_head(world.clone)
    assert not journal_path(GitRepo(world.clone)).exists()
    assert git(world.clone, "rev-parse", "HEAD") == git(world.remote, "rev-parse", "main")
    assert world.commits[4] in world.remote_file(API)
    assert world.commits[4] in world.remote_file(WORKER)


def test_kill_after_the_local_commit_is_recovered_by_the_next_run(world: GitOpsWorld, topology: Any) -> None:
    # SIGKILL after the promotion's local commit, before its push: the next run drops that unpushed commit of its
    # own (it is recorded in the journal) and lands its promotion instead of refusing the clone.
    remote_before = git(world.remote, "rev-parse", "main")
    killed = promote_in_child(world, topology, 3, "after-commit")
    assert killed.returncode == -signal.SIGKILL
    assert git(world.clone, "rev-parse", "HEAD") != remote_before
    assert git(world.remote, "rev-parse", "main") == remote_before
    done = promote_in_child(world, topology, 4, None)
    assert done.returncode == 0, done.stderr
    assert tree_equals_head(world.clone)
    assert not journal_path(GitRepo(world.clone)).exists()
    assert git(world.clone, "rev-parse", "HEAD") == git(world.remote, "rev-parse", "main")
    assert git(world.remote, "rev-parse", "main^") == remote_before  # the dropped commit never reached the remote
    assert world.commits[4] in world.remote_file(API)
    assert world.commits[4] in world.remote_file(WORKER)


def test_a_users_commit_on_top_of_a_crashed_promotion_is_never_dropped(world: GitOpsWorld, topology: Any) -> None:
    # After a crash after the local commit, a commit the user made on top is kept: the next run refuses, touching
    # neither commit.
    assert promote_in_child(world, topology, 3, "after-commit").returncode == -signal.SIGKILL
    (world.clone / "NOTES.md").write_text("mine\n")
    git(world.clone, "add", "NOTES.md")
    git(world.clone, "commit", "-q", "-m", "a user's own commit")
    mine = git(world.clone, "rev-parse", "HEAD")
    refused = promote_in_child(world, topology, 4, None)
    assert refused.returncode == 1
    assert "HEAD has commits that are not on origin/main" in refused.stderr
    assert git(world.clone, "rev-parse", "HEAD") == mine
    assert git(world.clone, "log", "-1", "--format=%s", "HEAD") == "a user's own commit\n"


def test_a_users_unpushed_commit_is_never_dropped(world: GitOpsWorld, topology: Any) -> None:
    # Without a journal of the toolkit's own, an unpushed commit (even one touching the values files) is the user's:
    # the run refuses and keeps it.
    path = world.clone / API
    path.write_text(path.read_text() + "# a note\n")
    git(world.clone, "commit", "-q", "-am", "promote: api by hand")
    mine = git(world.clone, "rev-parse", "HEAD")
    refused = promote_in_child(world, topology, 4, None)
    assert refused.returncode == 1
    assert "HEAD has commits that are not on origin/main" in refused.stderr
    assert git(world.clone, "rev-parse", "HEAD") == mine
