"""A release refuses bad inputs before any build: one line naming the variable or field, exit 2, nothing built."""

from __future__ import annotations

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
        ({"target": "nosuchstage"}, "targets.api.target: 'nosuchstage': no such stage"),
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
        ("FRACTALOPS_GITOPS_AUTHOR", "bogus", "FRACTALOPS_GITOPS_AUTHOR: 'bogus'"),
        ("FRACTALOPS_GITOPS_PUSH_ATTEMPTS", "abc", "FRACTALOPS_GITOPS_PUSH_ATTEMPTS must be an integer"),
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
