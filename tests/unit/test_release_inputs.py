"""A release refuses bad inputs before any build: one line naming the variable or field, exit 2, nothing built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("fractalops-release")
TARGETS = ROOT / "ops/containers/fractalops/targets.yaml"


@pytest.fixture
def engine_log(tmp_path: Path) -> Path:
    """A fake `docker` (named as such: it only records its calls and fails) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker-calls.log"
    fake = bin_dir / "docker"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexit 1\n')
    fake.chmod(0o755)
    return log


def release(engine_log: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"}
    }
    env.update(
        PATH=f"{engine_log.parent / 'bin'}:{os.environ['PATH']}",
        FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE="1",
        FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="0",
        FRACTALOPS_BUILD_EVENTS_FILE=str(engine_log.parent / "events.jsonl"),
    )
    env.pop("FRACTALOPS_TOPOLOGY", None)
    env.update(extra)
    return subprocess.run([str(EXE), "runtime", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], engine_log: Path, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    calls = engine_log.read_text() if engine_log.exists() else ""
    assert "build" not in calls.replace("buildx inspect", ""), f"a build was started: {calls}"
    assert not (engine_log.parent / "events.jsonl").exists()


@pytest.mark.parametrize(
    ("variable", "value", "needles"),
    [
        ("FRACTALOPS_BUILD_EVENTS_URL", "notaurl", ["FRACTALOPS_BUILD_EVENTS_URL='notaurl'", "http://"]),
        ("FRACTALOPS_SOURCE_COMMIT", "notacommit", ["FRACTALOPS_SOURCE_COMMIT='notacommit'", "full commit sha"]),
        ("FRACTALOPS_SOURCE_COMMIT", "a" * 40 + " ", ["FRACTALOPS_SOURCE_COMMIT=", "full commit sha"]),
        ("GITHUB_SHA", "HEAD~1", ["GITHUB_SHA='HEAD~1'"]),
        ("FRACTALOPS_PLATFORM", "bogus/os", ["FRACTALOPS_PLATFORM", "unknown OS 'bogus'"]),
        ("FRACTALOPS_PLATFORM", "linux/amd64,", ["FRACTALOPS_PLATFORM", "want os/arch"]),
        ("FRACTALOPS_PLATFORM", "linux/amd64/v9", ["FRACTALOPS_PLATFORM", "unknown variant 'v9' for amd64"]),
        ("FRACTALOPS_BUILD_EVENTS_URL", "http://host /x", ["FRACTALOPS_BUILD_EVENTS_URL"]),
    ],
)
def test_bad_environment_value_is_refused_before_any_build(
    engine_log: Path, variable: str, value: str, needles: list[str]
) -> None:
    # A value buildx would push as is, or that would fail only after the push, stops the release first.
    assert_refused(release(engine_log, **{variable: value}), engine_log, *needles)


@pytest.mark.parametrize("platform", ["", "linux/amd64,", "linux/amd64/x7", "linux/amd65"])
def test_bad_platform_option_is_refused_before_any_build(engine_log: Path, platform: str) -> None:
    # --platform values are checked as os/arch[/variant] with known parts.
    assert_refused(release(engine_log, "--platform", platform), engine_log, "--platform")


def test_events_url_credentials_are_never_shown(engine_log: Path) -> None:
    # A URL with user:password that is refused does not echo the password.
    result = release(engine_log, FRACTALOPS_BUILD_EVENTS_URL="ftp://user:s3cretpw@127.0.0.1/events")
    assert_refused(result, engine_log, "FRACTALOPS_BUILD_EVENTS_URL")
    assert "s3cretpw" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "where", "needle"),
    [
        ("GITHUB_OUTPUT", "nodir/out", "does not exist"),
        ("GITHUB_STEP_SUMMARY", "", "is a folder"),
        ("GITHUB_OUTPUT", "dangling", "does not exist"),
        ("GITHUB_OUTPUT", "afile/out", "is a file, not a folder"),
    ],
)
def test_unwritable_github_file_is_refused_before_any_build(
    engine_log: Path, tmp_path: Path, variable: str, where: str, needle: str
) -> None:
    # $GITHUB_OUTPUT / $GITHUB_STEP_SUMMARY that cannot be appended to would lose the image_refs after the push.
    (tmp_path / "dangling").symlink_to(tmp_path / "missing-folder" / "out")
    (tmp_path / "afile").write_text("")
    result = release(engine_log, **{variable: str(tmp_path / where)})
    assert_refused(result, engine_log, f"{variable}=", needle)


def targets_with(tmp_path: Path, name: str, changes: dict[str, str]) -> Path:
    yaml = YAML()
    data = yaml.load(TARGETS.read_text())
    for key, value in changes.items():
        if key.startswith("values."):
            data["targets"][name]["values"][key.split(".", 1)[1]] = value
        else:
            data["targets"][name][key] = value
    path = tmp_path / "targets.yaml"
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "release"])
@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"context": "ops/nowhere"}, "targets.api.context: 'ops/nowhere': no such folder"),
        ({"dockerfile": "NoSuchDockerfile"}, "targets.api.dockerfile: 'NoSuchDockerfile': cannot read"),
        ({"stage": "nosuchstage"}, "targets.api.stage: 'nosuchstage': no such stage"),
        ({"values.digest": "image.nokey"}, "image.nokey: key not found"),
    ],
)
def test_targets_file_mistake_is_a_configuration_error_in_dry_runs_and_releases(
    engine_log: Path, tmp_path: Path, changes: dict[str, str], needle: str, dry_run: bool
) -> None:
    # A missing build context, Dockerfile, stage or values key is exit 2 before any build, dry run or not.
    path = targets_with(tmp_path, "api", changes)
    args = ["--targets-file", str(path), "--target", "api", *(["--dry-run"] if dry_run else [])]
    assert_refused(release(engine_log, *args), engine_log, needle)


def test_relative_paths_are_taken_from_the_callers_folder(tmp_path: Path) -> None:
    # release.sh run from a subfolder reads a relative --targets-file from that subfolder, not the repository root.
    sub = ROOT / "platform"
    shutil.copy(TARGETS, tmp_path / "targets.yaml")
    relative = os.path.relpath(tmp_path / "targets.yaml", sub)
    result = subprocess.run(
        [str(ROOT / "ops/containers/fractalops/release.sh"), "--dry-run", "--targets-file", relative],
        capture_output=True,
        text=True,
        cwd=sub,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"targets"' in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("FRACTALOPS_GITOPS_AUTHOR", "bogus", "FRACTALOPS_GITOPS_AUTHOR='bogus'"),
        ("FRACTALOPS_GITOPS_PUSH_ATTEMPTS", "abc", "FRACTALOPS_GITOPS_PUSH_ATTEMPTS='abc': want a whole number"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["release", "dry-run"])
def test_bad_gitops_setting_stops_a_promoting_release_before_any_build(
    engine_log: Path, variable: str, value: str, needle: str, dry_run: bool
) -> None:
    # With GitOps updates on, what the promotion will need is checked before the images are built and pushed;
    # a dry run predicts the same refusal.
    args = ["--dry-run"] if dry_run else []
    result = release(engine_log, *args, FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1", **{variable: value})
    assert_refused(result, engine_log, needle)


def test_a_source_commit_that_is_not_the_checkout_is_never_promoted(engine_log: Path) -> None:
    # FRACTALOPS_SOURCE_COMMIT naming another commit than HEAD would label HEAD's files with it: a promoting
    # release refuses before any build.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    other = "0" * 40 if head.strip() != "0" * 40 else "1" * 40
    result = release(
        engine_log,
        FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1",
        FRACTALOPS_SOURCE_COMMIT=other,
    )
    assert result.returncode == 1, result.stderr
    assert f"the checkout is {head.strip()[:12]}, not the source commit {other[:12]}" in result.stderr
    calls = engine_log.read_text() if engine_log.exists() else ""
    assert "build" not in calls.replace("buildx inspect", "")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FRACTALOPS_SOURCE_COMMIT", "a" * 40 + "\n"),
        ("GITHUB_SHA", "b" * 40 + "\n"),
    ],
)
def test_value_with_a_trailing_newline_is_refused_before_any_build(engine_log: Path, variable: str, value: str) -> None:
    # Validators match the whole value: a trailing newline would otherwise reach labels and build arguments.
    assert_refused(release(engine_log, **{variable: value}), engine_log, variable)


def test_validators_match_the_whole_value() -> None:
    # Every validator in release/ refuses a value that is valid but for a trailing newline.
    from release.adapters.git import parse_author
    from release.build.checks import source_commit
    from release.buildersetup import plan_builder
    from release.errors import ConfigError
    from release.gitops.guards import monotonic
    from release.imageref import DIGEST, parse_image_ref

    with pytest.raises(ConfigError):
        source_commit("c" * 40 + "\n", None)
    with pytest.raises(ConfigError):
        parse_image_ref("ghcr.io/yamonco/fractalops-api@sha256:" + "d" * 64 + "\n")
    with pytest.raises(ConfigError):
        parse_image_ref("ghcr.io/yamonco/fractalops-api:tag\n")
    assert DIGEST.fullmatch("sha256:" + "e" * 64 + "\n") is None
    from release.topology import load_topology

    with pytest.raises(ConfigError, match="--name"):
        plan_builder(
            load_topology(ROOT / "ops/topology/fractalops.yaml"), "builder\n", "remote", endpoint="tcp://b:1234"
        )
    with pytest.raises(ConfigError, match="--namespace"):
        plan_builder(
            load_topology(ROOT / "ops/topology/fractalops.yaml"),
            "builder",
            "kubernetes",
            namespace="buildkit\n",
            config_path=ROOT / "unused.toml",
        )
    with pytest.raises(ConfigError):
        parse_author("Release Bot <bot@example.invalid>\n")

    class History:
        def resolve(self, rev: str) -> str | None:
            return rev

        def is_ancestor(self, older: str, newer: str) -> bool:
            return True

        def is_shallow(self) -> bool:
            return False

        def unshallow(self) -> str | None:
            return None

    decision = monotonic("api", "a" * 40, "b" * 40 + "\n", History())
    assert decision.verdict == "refuse"


@pytest.mark.parametrize(
    "author",
    [
        "Release Bot <bot@example.invalid>\nCommitter: evil <e@x>",
        "Release\rBot <bot@example.invalid>",
        "Release\x00Bot <bot@example.invalid>",
        "Release\tBot\x1b[31m <bot@example.invalid>",
    ],
)
def test_gitops_author_with_a_control_character_is_refused(engine_log: Path, author: str) -> None:
    # FRACTALOPS_GITOPS_AUTHOR may not hold newlines or other control characters (it goes into commit headers).
    if "\x00" in author:  # an environment variable cannot carry NUL: check the parser itself
        from release.adapters.git import parse_author
        from release.errors import ConfigError

        with pytest.raises(ConfigError, match="FRACTALOPS_GITOPS_AUTHOR"):
            parse_author(author)
        return
    result = release(
        engine_log, "--dry-run", FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1", FRACTALOPS_GITOPS_AUTHOR=author
    )
    assert_refused(result, engine_log, "FRACTALOPS_GITOPS_AUTHOR=")


@pytest.mark.parametrize(
    ("variable", "where", "needle"),
    [
        ("GITHUB_OUTPUT", "nodir/out", "does not exist"),
        ("GITHUB_STEP_SUMMARY", "", "is a folder"),
    ],
)
def test_dry_run_checks_the_github_files_too(
    engine_log: Path, tmp_path: Path, variable: str, where: str, needle: str
) -> None:
    # A dry run asks the same questions as the release: an unusable $GITHUB_OUTPUT / $GITHUB_STEP_SUMMARY is refused.
    result = release(engine_log, "--dry-run", **{variable: str(tmp_path / where)})
    assert_refused(result, engine_log, f"{variable}=", needle)


# --- a repository of the test's own -------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding copies of the project's topology, targets, Dockerfile and values files."""
    root = tmp_path / "repo"
    for part in ("ops/topology", "ops/containers/fractalops", "platform"):
        shutil.copytree(ROOT / part, root / part)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "seed"], check=True)
    return root


def release_in(repo: Path, engine_log: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`runtime` with FRACTALOPS_REPO_ROOT at `repo`, no GitHub context."""
    env = {
        "FRACTALOPS_REPO_ROOT": str(repo),
        "GITHUB_SERVER_URL": "",
        "GITHUB_REPOSITORY": "",
        "GITHUB_SHA": "",
        "FRACTALOPS_SOURCE_COMMIT": "",
    }
    return release(engine_log, *args, **{**env, **extra})


def source_labels(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The org.opencontainers.image.source label values of every build command in a dry run's plan."""
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    found = set()
    for target in plan["targets"]:
        command = target["command"]
        found |= {arg.split("=", 1)[1] for arg in command if arg.startswith("org.opencontainers.image.source=")}
        assert sum(1 for arg in command if arg.startswith("org.opencontainers.image.source=")) <= 1
    return found


def test_image_source_label_names_the_github_repository(engine_log: Path, repo: Path) -> None:
    # In GitHub Actions the source label is $GITHUB_SERVER_URL/$GITHUB_REPOSITORY, not a hard-coded repository.
    result = release_in(
        repo, engine_log, "--dry-run", GITHUB_SERVER_URL="https://github.example.com/", GITHUB_REPOSITORY="acme/widgets"
    )
    assert source_labels(result) == {"https://github.example.com/acme/widgets"}


@pytest.mark.parametrize(
    ("remote", "label"),
    [
        ("git@github.com:acme/widgets.git", "https://github.com/acme/widgets"),
        ("ssh://git@git.example.org:2222/acme/widgets.git", "https://git.example.org/acme/widgets"),
        ("https://user:s3cret-token@git.example.org/acme/widgets.git", "https://git.example.org/acme/widgets"),
        ("https://git.example.org/acme/widgets", "https://git.example.org/acme/widgets"),
    ],
)
def test_image_source_label_comes_from_the_git_remote(engine_log: Path, repo: Path, remote: str, label: str) -> None:
    # Outside Actions the label is origin's URL in https form, credentials removed.
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", remote], check=True)
    result = release_in(repo, engine_log, "--dry-run")
    assert source_labels(result) == {label}
    assert "s3cret-token" not in result.stdout + result.stderr


@pytest.mark.parametrize("remote", [None, "/srv/git/widgets.git", "file:///srv/git/widgets.git"])
def test_image_source_label_is_left_out_when_unknown(engine_log: Path, repo: Path, remote: str | None) -> None:
    # With no GitHub context and no web-reachable origin, the image carries no source label at all.
    if remote:
        subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", remote], check=True)
    assert source_labels(release_in(repo, engine_log, "--dry-run")) == set()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "release"])
@pytest.mark.parametrize("what", ["context", "dockerfile"])
def test_build_input_resolving_outside_the_repository_is_refused(
    engine_log: Path, repo: Path, tmp_path: Path, what: str, dry_run: bool
) -> None:
    # A context folder or Dockerfile that is a symlink out of the repository is a configuration error.
    outside = tmp_path / "outside"
    shutil.copytree(repo / "ops/containers/fractalops", outside)
    if what == "context":
        (repo / "ops/elsewhere").symlink_to(outside, target_is_directory=True)
        changes = {"context": "ops/elsewhere"}
    else:
        (repo / "ops/containers/fractalops/Other.Dockerfile").symlink_to(outside / "Dockerfile")
        changes = {"dockerfile": "Other.Dockerfile"}
    targets = targets_with(tmp_path, "api", changes)
    args = ["--targets-file", str(targets), "--target", "api", *(["--dry-run"] if dry_run else [])]
    assert_refused(release_in(repo, engine_log, *args), engine_log, f"targets.api.{what}", "outside the repository")


@pytest.mark.parametrize("kind", ["symlink-out", "symlink-in", "fifo", "not-utf8", "deep"])
def test_unusable_values_file_is_refused_in_a_dry_run(engine_log: Path, repo: Path, tmp_path: Path, kind: str) -> None:
    # A values file that is a symlink (even within the repository), a FIFO, not UTF-8 or absurdly nested is one
    # line, exit 2, naming the file, before any build.
    relative = "platform/k8s/apps/fractalops-api/values.yaml"
    path = repo / relative
    original = path.read_bytes()
    path.unlink()
    if kind == "symlink-out":
        (tmp_path / "outside.yaml").write_bytes(original)
        path.symlink_to(tmp_path / "outside.yaml")
    elif kind == "symlink-in":
        (repo / "platform/real.yaml").write_bytes(original)
        path.symlink_to(repo / "platform/real.yaml")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "not-utf8":
        path.write_bytes(original.replace(b"replicaCount", b"replica\xc3\x28Count"))
    else:
        path.write_bytes(original + b"deep: " + b"[" * 5000 + b"]" * 5000 + b"\n")
    result = subprocess.run(
        [str(EXE), "runtime", "--dry-run", "--target", "api"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "FRACTALOPS_", "CI"))},
            "FRACTALOPS_REPO_ROOT": str(repo),
            "PATH": f"{engine_log.parent / 'bin'}:{os.environ['PATH']}",
        },
        check=False,
    )
    assert_refused(result, engine_log, relative)
