"""Values files a promotion refuses or must handle: symlinks, FIFOs, huge files, alias bombs, odd bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from release.errors import ConfigError
from release.gitops.commands import PromoteRequest, run_promote
from release.gitops.promote import plan_promotion

from .conftest import PROMOTE_CHILD, GitOpsWorld, git, loaded_for, write_topology

API = "platform/k8s/apps/fractalops-api/values.yaml"
WORKER = "platform/k8s/apps/fractalops-worker/values.yaml"


def state(world: GitOpsWorld) -> tuple[str, str, str]:
    """Remote tip, clone HEAD and clone status."""
    return (
        git(world.remote, "rev-parse", "main"),
        git(world.clone, "rev-parse", "HEAD"),
        git(world.clone, "status", "--porcelain"),
    )


def commit_and_push(world: GitOpsWorld, message: str) -> None:
    """Commit everything in the clone and push it, so the remote and the clone agree."""
    git(world.clone, "add", "-A")
    git(world.clone, "commit", "-q", "-m", message)
    git(world.clone, "push", "-q", "origin", "HEAD:main")


def promote_in_child(
    world: GitOpsWorld, topology: Any, index: int, *, dry_run: bool, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Promote api and worker (from source commit `index`) in a child process: a hang fails at `timeout`."""
    args = [
        str(world.clone),
        str(world.source),
        str(write_topology(world, topology)),
        "dry" if dry_run else "real",
        f"api={world.image('api', index)}",
        f"worker={world.image('worker', index)}",
    ]
    return subprocess.run(
        [sys.executable, "-c", PROMOTE_CHILD, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_symlinked_values_file_is_refused_before_anything_is_written(
    world: GitOpsWorld, topology: Any, where: str
) -> None:
    # A values file committed as a symlink (out of the repository, or within it) is refused in one line, exit 2:
    # no file is edited, nothing is committed or pushed.
    target = world.root / "outside-values.yaml" if where == "outside" else world.clone / "platform/real-values.yaml"
    target.write_bytes((world.clone / API).read_bytes())
    (world.clone / API).unlink()
    (world.clone / API).symlink_to(target)
    commit_and_push(world, "values as a symlink")
    before, pointed = state(world), target.read_bytes()
    worker_before = (world.clone / WORKER).read_bytes()
    for dry_run in (True, False):
        result = promote_in_child(world, topology, 3, dry_run=dry_run)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert API in lines[0] and "symlink" in lines[0]
    assert state(world) == before
    assert target.read_bytes() == pointed
    assert (world.clone / WORKER).read_bytes() == worker_before


def test_values_file_under_a_symlinked_folder_is_refused(world: GitOpsWorld, topology: Any) -> None:
    # A folder on the way to a values file that is a symlink out of the repository is refused the same way.
    outside = world.root / "outside-apps"
    (world.clone / "platform/k8s/apps").rename(outside)
    (world.clone / "platform/k8s/apps").symlink_to(outside, target_is_directory=True)
    pointed = (outside / "fractalops-api/values.yaml").read_bytes()
    with pytest.raises(ConfigError, match=r"outside the repository|symlink") as caught:
        run_promote(
            PromoteRequest((f"api={world.image('api', 3)}",), source_repo=world.source),
            loaded_for(world, topology),
            repo_root=world.clone,
        )
    assert API in str(caught.value)
    assert (outside / "fractalops-api/values.yaml").read_bytes() == pointed
    assert git(world.remote, "rev-parse", "main") == git(world.clone, "rev-parse", "HEAD")


def test_fifo_values_file_is_refused_without_waiting(world: GitOpsWorld, topology: Any) -> None:
    # A named pipe where a values file should be is refused at once (no writer would ever come).
    (world.clone / API).unlink()
    os.mkfifo(world.clone / API)
    result = promote_in_child(world, topology, 3, dry_run=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "not a regular file" in result.stderr and API in result.stderr


@pytest.mark.parametrize(
    ("tail", "problem"),
    [(b"deep: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nest"), (b"note: caf\xe9\n", "UTF-8")],
    ids=["deep-nesting", "not-utf8"],
)
def test_unreadable_values_file_is_one_line_naming_the_file(
    world: GitOpsWorld, topology: Any, tail: bytes, problem: str
) -> None:
    # Deep nesting or bytes that are not UTF-8 end in one line, exit 2, naming the file: no traceback.
    with (world.clone / API).open("ab") as handle:
        handle.write(tail)
    commit_and_push(world, "odd values file")
    result = promote_in_child(world, topology, 3, dry_run=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and API in lines[0] and problem in lines[0], result.stderr


def test_alias_bomb_elsewhere_in_a_values_file_does_not_hang_the_edit(world: GitOpsWorld, topology: Any) -> None:
    # Anchors and aliases away from the pinned keys are the file owner's business; they are never expanded.
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{n}: &{n} [{','.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefghi", "bcdefghij", strict=True)
    )
    with (world.clone / API).open("a") as handle:
        handle.write(bomb)
    commit_and_push(world, "aliases")
    result = promote_in_child(world, topology, 3, dry_run=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert world.commits[3] in world.remote_file(API)
    assert world.remote_file(API).endswith(bomb)


def _grow(world: GitOpsWorld, size: int, text: str) -> None:
    """Make the api values file `text` plus a long env list, about `size` bytes in all, committed and pushed."""
    item = '  - name: EXTRA_{:07d}\n    value: "a value that is long enough to be realistic, number {:07d}"\n'
    count = max(1, (size - len(text)) // len(item.format(0, 0)))
    (world.clone / API).write_text(text + "extraEnv:\n" + "".join(item.format(i, i) for i in range(count)))
    commit_and_push(world, f"grow to {size}")


def _plan_seconds(world: GitOpsWorld, topology: Any, index: int) -> float:
    images = {"api": world.image("api", index), "worker": world.image("worker", index)}
    started = time.perf_counter()
    plan = plan_promotion(images, repo_root=world.clone, topology=topology, source_repo=world.source)
    seconds = time.perf_counter() - started
    assert f"+  digest: {images['api'].split('@')[1]}" in plan.diff
    return seconds


@pytest.mark.slow
def test_large_values_file_is_planned_in_linear_time(world: GitOpsWorld, topology: Any) -> None:
    # A 3 MB values file is planned (read, guarded, edited, verified, diffed) in seconds, and 4x the input costs
    # well under 8x the time (the edit is linear in the file size).
    seed = (world.clone / API).read_text()
    _grow(world, 750_000, seed)
    small = _plan_seconds(world, topology, 3)
    _grow(world, 3_000_000, seed)
    assert (world.clone / API).stat().st_size > 2_900_000
    large = _plan_seconds(world, topology, 4)
    print(f"\n[values edit] 0.75 MB: {small:.2f} s, 3 MB: {large:.2f} s, ratio {large / small:.1f}")
    assert large < 20, f"a 3 MB values file took {large:.1f} s to plan"
    assert large < 8 * max(small, 0.25), f"4x the input took {large / small:.1f}x the time"
