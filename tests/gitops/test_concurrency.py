"""Concurrent promotions from separate clones against one bare remote: linear history, no lost or older update."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from release.errors import ReleaseError
from release.gitops.promote import Policy, promote
from release.gitops.yamledit import read_values

from .conftest import GitOpsWorld, git, push_options

API = "platform/k8s/apps/fractalops-api/values.yaml"
WORKER = "platform/k8s/apps/fractalops-worker/values.yaml"
REVISION = 'podAnnotations."fractalops.io/source-commit"'
PROMOTERS = 10


def _race(world: GitOpsWorld, topology: Any, policy: Policy) -> tuple[list[dict[str, Any]], float]:
    """Start PROMOTERS promotions of distinct source commits at once, each from its own clone."""
    jobs = []
    for index in range(1, PROMOTERS + 1):
        clone = world.new_clone(f"clone-{policy}-{index}")
        jobs.append(
            {"index": index, "clone": clone, "api": world.image("api", index), "worker": world.image("worker", index)}
        )
    barrier = threading.Barrier(len(jobs))

    def work(job: dict[str, Any]) -> None:
        barrier.wait()
        try:
            job["result"] = promote(
                {"api": job["api"], "worker": job["worker"]},
                repo_root=job["clone"],
                topology=topology,
                source_repo=world.source,
                policy=policy,
                **push_options(push_attempts=30, push_backoff=0.05),
            )
        except ReleaseError as err:
            job["error"] = err

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return jobs, time.monotonic() - started


def _check_history(world: GitOpsWorld, jobs: list[dict[str, Any]]) -> list[int]:
    """Linear history; each landed commit holds exactly its own edit; pinned source commits only move forward."""
    assert git(world.remote, "log", "--merges", "--format=%H", "main") == ""
    parents = git(world.remote, "log", "--format=%P", "main").splitlines()
    assert all(len(line.split()) == 1 for line in parents[:-1])
    assert parents[-1] == ""
    landed = {job["result"].commit: job for job in jobs if "result" in job and job["result"].pushed}
    order: list[int] = []
    for sha in reversed(git(world.remote, "rev-list", "main").split()[:-1]):
        job = landed.pop(sha)
        files = sorted(git(world.remote, "show", "--name-only", "--format=", sha).split())
        assert files == [API, WORKER]
        for path, ref in ((API, job["api"]), (WORKER, job["worker"])):
            text = git(world.remote, "show", f"{sha}:{path}")
            assert read_values(text, ["image.digest", REVISION]) == {
                "image.digest": ref.split("@")[1],
                REVISION: world.commits[job["index"]],
            }
        order.append(job["index"])
    assert landed == {}, "a promotion reported pushed but its commit is not on the remote"
    assert order == sorted(order), f"an older build overwrote a newer one: {order}"
    return order


@pytest.mark.slow
def test_concurrent_promotions_keep_history_linear_and_never_go_backwards(
    world: GitOpsWorld, topology: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ten promotions at once (monotonic policy): each lands or is refused as older; the newest source commit ends pinned.
    jobs, seconds = _race(world, topology, "monotonic")
    for job in jobs:
        assert ("result" in job) != ("error" in job)
        if "error" in job:
            assert "older than the pinned" in str(job["error"])
            assert git(job["clone"], "status", "--porcelain") == ""
    order = _check_history(world, jobs)
    assert order
    assert order[-1] == PROMOTERS
    retries = sum(job["result"].retries for job in jobs if "result" in job)
    with capsys.disabled():
        print(
            f"\n[concurrency monotonic] {PROMOTERS} promoters: landed {order}, refused {PROMOTERS - len(order)}, "
            f"retries {retries}, wall {seconds:.2f}s"
        )


@pytest.mark.slow
def test_concurrent_promotions_with_strict_cas_land_at_most_one_per_base(
    world: GitOpsWorld, topology: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Strict compare-and-swap: promotions planned on the same base cannot both land; the rest fail clearly, clones clean.
    jobs, seconds = _race(world, topology, "strict")
    for job in jobs:
        assert ("result" in job) != ("error" in job)
        if "error" in job:
            assert "compare-and-swap" in str(job["error"]) or "older than the pinned" in str(job["error"])
            assert git(job["clone"], "status", "--porcelain") == ""
    order = _check_history(world, jobs)
    assert len(order) == 1
    retries = sum(job["result"].retries for job in jobs if "result" in job)
    with capsys.disabled():
        print(f"\n[concurrency strict] {PROMOTERS} promoters: landed {order}, retries {retries}, wall {seconds:.2f}s")
