"""Promotion end to end against real git repositories and a stand-in registry over real HTTP."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from release.adapters.git import GitRepo
from release.errors import ConfigError, GitError, GuardRefusal, RegistryError
from release.gitops.commands import PromoteRequest, parse_pairs, run_promote
from release.gitops.promote import apply_promotion, plan_promotion, promote
from release.gitops.writer import journal_path

from .conftest import GitOpsWorld, git, loaded_for, push_options

API = "platform/k8s/apps/fractalops-api/values.yaml"
WORKER = "platform/k8s/apps/fractalops-worker/values.yaml"


def snapshot(world: GitOpsWorld) -> tuple[str, str, str, str]:
    """Remote tip, clone HEAD, clone status and the two values files: to prove nothing changed."""
    return (
        git(world.remote, "rev-parse", "main"),
        git(world.clone, "rev-parse", "HEAD"),
        git(world.clone, "status", "--porcelain"),
        (world.clone / API).read_text() + (world.clone / WORKER).read_text(),
    )


def run(world: GitOpsWorld, topology: Any, images: dict[str, str], **kwargs: Any) -> Any:
    """Promote `images` from the world's clone with the default push settings, overridden by `kwargs`."""
    options = push_options(**{k: v for k, v in kwargs.items() if k in push_options()})
    rest = {k: v for k, v in kwargs.items() if k not in options}
    return promote(images, repo_root=world.clone, topology=topology, source_repo=world.source, **options, **rest)


def command(world: GitOpsWorld, topology: Any, pairs: list[str], **request: Any) -> Any:
    """Run the click-free `promote` command on the world's clone; its exit code (stdout and stderr thrown away)."""
    out, err = request.pop("out", io.StringIO()), request.pop("err", io.StringIO())
    return run_promote(
        PromoteRequest(tuple(pairs), source_repo=world.source, **request),
        loaded_for(world, topology),
        repo_root=world.clone,
        out=out,
        err=err,
    )


def test_promotion_lands_api_and_worker_in_one_pushed_commit(world: GitOpsWorld, topology: Any) -> None:
    # Both targets land in a single commit on the remote that names each image and source commit.
    api, worker = world.image("api", 3), world.image("worker", 3)
    result = run(world, topology, {"api": api, "worker": worker})
    assert result.pushed
    assert result.retries == 0
    assert git(world.remote, "rev-parse", "main").strip() == result.commit
    files = git(world.remote, "show", "--name-only", "--format=", "main").split()
    assert sorted(files) == [API, WORKER]
    message = git(world.remote, "log", "-1", "--format=%B%n%an <%ae>", "main")
    assert api in message
    assert worker in message
    assert world.commits[3] in message
    assert "fractalops-release <release@fractalops.invalid>" in message
    assert f"digest: {api.split('@')[1]}" in world.remote_file(API)
    assert git(world.clone, "status", "--porcelain") == ""


def test_promotion_diff_touches_only_the_pinned_lines(world: GitOpsWorld, topology: Any) -> None:
    # The commit's diff changes tag, digest and source-commit lines only (repository already matches).
    api = world.image("api", 2)
    run(world, topology, {"api": api})
    diff = git(world.remote, "show", "--format=", "-U0", "main")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(changed) == 6
    assert {line[1:].split(":")[0].strip() for line in changed} == {"tag", "digest", "fractalops.io/source-commit"}


def test_dry_run_prints_the_diff_and_touches_nothing(world: GitOpsWorld, topology: Any) -> None:
    # A dry run returns the unified diff it would commit and changes no file, commit or remote.
    before = snapshot(world)
    api = world.image("api", 4)
    out = io.StringIO()
    code = command(world, topology, [f"api={api}"], dry_run=True, out=out)
    assert code == 0
    text = out.getvalue()
    assert f"+++ b/{API}" in text
    assert f"+  digest: {api.split('@')[1]}" in text
    assert snapshot(world) == before


def test_already_pinned_digest_is_a_noop_without_commit(world: GitOpsWorld, topology: Any) -> None:
    # Promoting the digest the file already pins changes nothing and makes no commit.
    api = world.image("api", 5)
    run(world, topology, {"api": api})
    before = snapshot(world)
    result = run(world, topology, {"api": api})
    assert result.noop
    assert result.commit is None
    assert not result.pushed
    assert [d.verdict for d in result.decisions] == ["noop"]
    assert snapshot(world) == before


def test_older_source_commit_is_refused_and_force_overrides(world: GitOpsWorld, topology: Any) -> None:
    # Pinning a build from an older source commit is refused (exit 1); --force rolls back on purpose.
    run(world, topology, {"api": world.image("api", 6)})
    before = snapshot(world)
    old = world.image("api", 2)
    with pytest.raises(GuardRefusal, match="older than the pinned") as caught:
        run(world, topology, {"api": old})
    assert caught.value.exit_code == 1
    assert snapshot(world) == before
    result = run(world, topology, {"api": old}, force=True)
    assert result.pushed
    assert any(d.verdict == "forced" for d in result.decisions)


def test_unrelated_source_commit_is_refused_unless_forced(world: GitOpsWorld, topology: Any) -> None:
    # A candidate whose source commit is not in the source repository is refused without --force.
    digest = world.registry.add_image("yamonco/fractalops-api", "d" * 40)
    ref = world.registry.ref("yamonco/fractalops-api", digest, "sha-ddddddd")
    before = snapshot(world)
    with pytest.raises(GuardRefusal, match="not in the source repository"):
        run(world, topology, {"api": ref})
    assert snapshot(world) == before
    assert run(world, topology, {"api": ref}, force=True).pushed


def test_compare_and_swap_refuses_when_the_file_changed_after_the_plan(world: GitOpsWorld, topology: Any) -> None:
    # A plan made before someone else pinned another image is refused at apply time, and the clone is left clean.
    plan = plan_promotion(
        {"api": world.image("api", 8)}, repo_root=world.clone, topology=topology, source_repo=world.source
    )
    other = world.new_clone("other")
    promote(
        {"api": world.image("api", 7)}, repo_root=other, topology=topology, source_repo=world.source, **push_options()
    )
    with pytest.raises(GuardRefusal, match="compare-and-swap"):
        apply_promotion(plan, **push_options())
    assert git(world.clone, "status", "--porcelain") == ""
    assert git(world.clone, "rev-parse", "HEAD") == git(world.remote, "rev-parse", "main")


def test_uncommitted_change_to_a_values_file_is_refused(world: GitOpsWorld, topology: Any) -> None:
    # A working tree with local edits to a values file is refused and the edit is kept.
    (world.clone / API).write_text((world.clone / API).read_text() + "# local edit\n")
    remote_before = git(world.remote, "rev-parse", "main")
    with pytest.raises(GuardRefusal, match="uncommitted changes"):
        run(world, topology, {"api": world.image("api", 4)})
    assert (world.clone / API).read_text().endswith("# local edit\n")
    assert git(world.remote, "rev-parse", "main") == remote_before


@pytest.mark.parametrize(
    ("pairs", "error", "problem"),
    [
        (["api"], ConfigError, "want target=image_ref"),
        (["api=ghcr.io/yamonco/fractalops-api:latest"], ConfigError, "not pinned by digest"),
        (["api=not a ref"], ConfigError, "not a valid image reference"),
        (["nope=ghcr.io/x/y@sha256:" + "0" * 64], ConfigError, "unknown target"),
        (["api=ghcr.io/other/fractalops-api@sha256:" + "0" * 64], ConfigError, "is not the target's"),
    ],
)
def test_bad_image_argument_is_a_one_line_config_error(
    world: GitOpsWorld, topology: Any, pairs: list[str], error: type[Exception], problem: str
) -> None:
    # Malformed pairs and refs, unknown targets and foreign repositories exit 2 in one line, touching nothing.
    before = snapshot(world)
    with pytest.raises(error) as caught:
        command(world, topology, pairs)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 2
    assert snapshot(world) == before


def test_digest_absent_from_the_registry_is_a_registry_error(world: GitOpsWorld, topology: Any) -> None:
    # A well-formed ref whose digest the registry does not hold exits 1 and touches nothing.
    before = snapshot(world)
    ref = world.registry.ref("yamonco/fractalops-api", "sha256:" + "e" * 64)
    with pytest.raises(RegistryError, match="not in the registry") as caught:
        run(world, topology, {"api": ref})
    assert caught.value.exit_code == 1
    assert snapshot(world) == before
    assert any(r.startswith("HEAD /v2/yamonco/fractalops-api/manifests/sha256:eee") for r in world.registry.requests)


def test_json_record_is_printed_and_appended(world: GitOpsWorld, topology: Any, tmp_path: Path) -> None:
    # --json prints the release record, which is also appended as one line to the records file.
    records = world.root / "records" / "releases.jsonl"
    out, err = io.StringIO(), io.StringIO()
    api = world.image("api", 9)
    command(world, topology, [f"api={api}"], json_output=True, out=out, err=err)
    printed = json.loads(out.getvalue())
    stored = [json.loads(line) for line in records.read_text().splitlines()]
    assert stored == [printed]
    assert printed["images"] == {"api": api}
    assert printed["source_commits"] == {"api": world.commits[9]}
    assert printed["commit"] == git(world.remote, "rev-parse", "main").strip()
    assert printed["pushed"] is True
    assert printed["retries"] == 0
    assert {d["guard"] for d in printed["decisions"]} == {"cas", "monotonic"}
    assert "pushed to origin/main" in err.getvalue()


def test_push_rejected_by_a_moved_remote_rebases_and_lands(
    world: GitOpsWorld, topology: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When another change lands just before our push, the push is rejected; we fetch, re-apply on the new tip and land.
    other = world.new_clone("other")
    original_push = GitRepo.push
    calls: list[str] = []

    def push_after_a_concurrent_change(self: GitRepo, remote: str, branch: str) -> Any:
        if not calls:
            (other / "README.md").write_text("unrelated change\n")
            git(other, "add", "README.md")
            git(other, "commit", "-q", "-m", "unrelated")
            git(other, "push", "-q", "origin", "HEAD:main")
        outcome = original_push(self, remote, branch)
        calls.append(outcome.status)
        return outcome

    monkeypatch.setattr(GitRepo, "push", push_after_a_concurrent_change)
    result = run(world, topology, {"api": world.image("api", 5)}, push_backoff=0)
    assert calls == ["moved", "accepted"]
    assert result.pushed
    assert result.retries == 1
    assert git(world.remote, "log", "--merges", "--format=%H", "main") == ""
    assert git(world.remote, "rev-parse", "main~1").strip() == git(other, "rev-parse", "HEAD").strip()
    assert git(world.clone, "rev-parse", "HEAD") == git(world.remote, "rev-parse", "main")


def test_exhausted_retry_budget_fails_clearly_and_leaves_the_clone_clean(
    world: GitOpsWorld, topology: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A remote that moves before every push exhausts the budget: GitError, nothing pushed, clone clean at the remote tip.
    other = world.new_clone("mover")
    original_push = GitRepo.push
    moves: list[int] = []

    def moving_push(self: GitRepo, remote: str, branch: str) -> Any:
        (other / "noise.txt").write_text(f"{len(moves)}\n")
        git(other, "add", "noise.txt")
        git(other, "commit", "-q", "-m", "noise")
        git(other, "push", "-q", "origin", "HEAD:main")
        moves.append(1)
        return original_push(self, remote, branch)

    monkeypatch.setattr(GitRepo, "push", moving_push)
    with pytest.raises(GitError, match="rejected 3 times"):
        run(world, topology, {"api": world.image("api", 4)}, push_attempts=3, push_backoff=0)
    assert len(moves) == 3
    assert git(world.clone, "status", "--porcelain") == ""
    assert "noise" in git(world.remote, "log", "-1", "--format=%s", "main")
    assert not journal_path(GitRepo(world.clone)).exists()


def test_parse_pairs_rejects_a_target_given_twice() -> None:
    # The same target twice on one command line is a usage error.
    with pytest.raises(ConfigError, match="given twice"):
        parse_pairs(["api=a", "api=b"])


@pytest.mark.parametrize("second", [" api=b", "api =b", "\tapi=b", "api\n=b"])
def test_parse_pairs_catches_a_target_given_twice_with_whitespace_around_it(second: str) -> None:
    # Whitespace around a target name does not make it another target: it is still given twice.
    with pytest.raises(ConfigError, match="given twice") as caught:
        parse_pairs(["api=a", second])
    assert "\n" not in str(caught.value)
    assert parse_pairs([second]) == {"api": "b"}


@pytest.mark.parametrize("pair", ["a pi=x", "api\x1b[2J=x", "ap\ni=x"])
def test_parse_pairs_refuses_whitespace_or_control_characters_inside_a_name(pair: str) -> None:
    # A target name never holds whitespace or control characters; the error stays on one line.
    with pytest.raises(ConfigError, match="target name") as caught:
        parse_pairs([pair])
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_head_commit_reads_head_and_is_none_outside_a_repository(tmp_path: Path) -> None:
    # The driver's source commit: HEAD of the repository, None where there is no repository or no commit.
    from release.adapters.git import head_commit

    assert head_commit(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True)
    assert head_commit(tmp_path / "r") is None
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e.invalid",
    }
    subprocess.run(["git", "-C", str(tmp_path / "r"), "commit", "-q", "--allow-empty", "-m", "x"], check=True, env=env)
    expected = subprocess.run(
        ["git", "-C", str(tmp_path / "r"), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert head_commit(tmp_path / "r") == expected


def test_dry_run_refuses_uncommitted_values_changes_like_the_real_run(world: GitOpsWorld, topology: Any) -> None:
    # promote --dry-run predicts the real run: uncommitted edits to a values file are refused, nothing written.
    values = world.clone / API
    values.write_text(values.read_text() + "# local edit\n")
    before = values.read_text()
    with pytest.raises(GuardRefusal, match="uncommitted changes"):
        command(world, topology, [f"api={world.image('api', 4)}"], dry_run=True)
    assert values.read_text() == before


def test_promotion_to_a_branch_or_remote_that_does_not_exist_is_refused(world: GitOpsWorld, topology: Any) -> None:
    # A typo in the GitOps branch or remote is exit 2 before any commit, not a new branch on the remote.
    before = snapshot(world)
    api = world.image("api", 3)
    with pytest.raises(ConfigError, match="'typo': origin has no such branch"):
        run(world, topology, {"api": api}, branch="typo")
    with pytest.raises(ConfigError, match=r"'nosuch': .* has no such git remote"):
        run(world, topology, {"api": api}, remote="nosuch")
    assert snapshot(world) == before
    assert git(world.remote, "branch", "--list", "typo") == ""


@pytest.mark.parametrize(
    ("setting", "value", "needle"),
    [
        ("author", "bogus", "FRACTALOPS_GITOPS_AUTHOR: 'bogus'"),
        ("push_attempts", 0, "FRACTALOPS_GITOPS_PUSH_ATTEMPTS must be at least 1"),
    ],
)
def test_dry_run_refuses_bad_gitops_settings_like_the_real_run(
    world: GitOpsWorld, topology: Any, setting: str, value: Any, needle: str
) -> None:
    # A bad author or push budget is found by the dry run too, not only when the real run commits.
    api = world.image("api", 3)
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match=needle):
            run(world, topology, {"api": api}, dry_run=dry_run, **{setting: value})
    assert git(world.clone, "status", "--porcelain") == ""


def test_image_built_from_uncommitted_changes_is_refused_unless_forced(world: GitOpsWorld, topology: Any) -> None:
    # An image labelled io.fractalops.source.dirty=true does not match its source commit: refused, --force overrides.
    api = world.image("api", 3, labels={"io.fractalops.source.dirty": "true"})
    before = snapshot(world)
    with pytest.raises(GuardRefusal, match="built from uncommitted changes"):
        run(world, topology, {"api": api})
    assert snapshot(world) == before
    assert run(world, topology, {"api": api}, force=True).pushed


def test_push_retries_that_run_out_name_the_last_rejection(world: GitOpsWorld, topology: Any) -> None:
    # A stale lock on the remote branch is not "the remote kept moving": the error quotes git's last answer.
    lock = world.remote / "refs" / "heads" / "main.lock"
    lock.write_text("stale\n")
    try:
        with pytest.raises(GitError, match=r"rejected 2 times \(last: .*cannot lock ref"):
            run(world, topology, {"api": world.image("api", 3)}, push_attempts=2, push_backoff=0.0)
    finally:
        lock.unlink()


def test_a_tag_that_names_another_commit_is_refused(world: GitOpsWorld, topology: Any) -> None:
    # repo:sha-0000000@<digest of commit 3> would pin a tag that names no commit of that image: exit 2, nothing written.
    good = world.image("api", 3)
    repository, digest = good.split("@")
    wrong = f"{repository.rsplit(':', 1)[0]}:sha-0000000@{digest}"
    before = snapshot(world)
    with pytest.raises(ConfigError, match="does not name the image's source commit"):
        run(world, topology, {"api": wrong})
    assert snapshot(world) == before
    untagged = f"{repository.rsplit(':', 1)[0]}@{digest}"
    assert run(world, topology, {"api": untagged}).pushed
    assert f"tag: sha-{world.commits[3][:7]}" in world.remote_file(API)


def test_unpushed_local_commits_are_refused_before_anything_is_written(world: GitOpsWorld, topology: Any) -> None:
    # HEAD ahead of the remote branch would stop the promotion only after the images were pushed: refused up front,
    # in the dry run as in the real run.
    (world.clone / "local.txt").write_text("not pushed\n")
    git(world.clone, "add", "local.txt")
    git(world.clone, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "local only")
    before = snapshot(world)
    for dry_run in (True, False):
        with pytest.raises(GuardRefusal, match="HEAD has commits that are not on origin/main"):
            run(world, topology, {"api": world.image("api", 3)}, dry_run=dry_run)
    assert snapshot(world) == before


def test_a_tag_that_names_the_images_commit_in_another_form_is_accepted(world: GitOpsWorld, topology: Any) -> None:
    # sha-<12 characters> or the full sha name the same commit as the configured sha-<7>: promoted as given.
    digest = world.image("api", 3).split("@")[1]
    repository = world.image("api", 3).split("@")[0].rsplit(":", 1)[0]
    ref = f"{repository}:sha-{world.commits[3][:12]}@{digest}"
    assert run(world, topology, {"api": ref}).pushed
    assert f"tag: sha-{world.commits[3][:12]}" in world.remote_file(API)
