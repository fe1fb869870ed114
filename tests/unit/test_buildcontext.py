"""What of a build context reaches BuildKit: .dockerignore patterns, exceptions and the Dockerfile."""

from __future__ import annotations

from pathlib import Path

import pytest

from release.build.context import files_sent, ignored


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        ("README.md", ["*"], True),
        ("app/main.py", ["*"], True),
        ("app/main.py", ["*", "!app"], False),
        ("app/main.py", ["app"], True),
        ("app/main.py", ["*.md"], False),
        ("docs/a.md", ["**/*.md"], True),
        ("a.md", ["**/*.md"], True),
        ("src/x/test_a.py", ["src/**/test_*.py"], True),
        ("src/x/a.py", ["src/**/test_*.py"], False),
        ("keep.md", ["*.md", "!keep.md"], False),
        ("b.txt", ["[ab].txt"], True),
        ("c.txt", ["[ab].txt"], False),
        ("node_modules/x/y.js", ["/node_modules"], True),
        ("a/b", [], False),
    ],
)
def test_dockerignore_patterns_match_as_buildkit_does(path: str, patterns: list[str], expected: bool) -> None:
    # Go filepath.Match with **, folders exclude their contents, the last matching pattern or exception wins.
    assert ignored(path, patterns) is expected


def test_only_files_that_reach_the_build_count(tmp_path: Path) -> None:
    # With `*` ignored, an edited README beside the Dockerfile is not part of the build; the Dockerfile always is.
    context = tmp_path / "ctx"
    context.mkdir()
    (context / ".dockerignore").write_text("# nothing but the Dockerfile\n*\n!app\n")
    changed = ["ctx/README.md", "ctx/Dockerfile", "ctx/app/main.py", "other/x.py", "ctx/.dockerignore"]
    assert files_sent("ctx", "Dockerfile", changed, tmp_path) == [
        "ctx/Dockerfile",
        "ctx/app/main.py",
        "ctx/.dockerignore",
    ]


def test_a_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    # BuildKit reads <Dockerfile>.dockerignore before .dockerignore.
    context = tmp_path / "ctx"
    context.mkdir()
    (context / ".dockerignore").write_text("*\n")
    (context / "Dockerfile.dockerignore").write_text("*.md\n")
    assert files_sent("ctx", "Dockerfile", ["ctx/main.py", "ctx/README.md"], tmp_path) == ["ctx/main.py"]


def _repo(tmp_path: Path) -> Path:
    import subprocess

    root = tmp_path / "repo"
    (root / "ctx").mkdir(parents=True)
    (root / "ctx" / "a.txt").write_text("a\n")
    (root / ".gitignore").write_text("*.env\n")
    (root / "notes.txt").write_text("n\n")
    for argv in (["init", "-q"], ["add", "."], ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "i"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True)
    return root


def test_changed_files_with_spaces_unicode_renames_and_ignored_files_are_all_seen(tmp_path: Path) -> None:
    # git status -z: no quoting of odd names; a rename into the context and a git-ignored file count too.
    import subprocess

    from release.adapters.git import dirty_paths

    root = _repo(tmp_path)
    assert dirty_paths(root, ["ctx"]) == []
    (root / "ctx" / "sp ace.txt").write_text("x")
    (root / "ctx" / "é.txt").write_text("x")
    (root / "ctx" / "secret.env").write_text("x")
    subprocess.run(["git", "-C", str(root), "mv", "notes.txt", "ctx/notes.txt"], check=True)
    assert dirty_paths(root, ["ctx"]) == ["ctx/notes.txt", "ctx/secret.env", "ctx/sp ace.txt", "ctx/é.txt"]


def test_a_git_that_cannot_answer_is_an_error_not_a_clean_tree(tmp_path: Path) -> None:
    # A checkout git refuses (here: owned by another user, "dubious ownership") is never taken as clean;
    # a folder outside any checkout has nothing to compare with.
    import os
    import shutil

    from release.adapters.git import dirty_paths
    from release.errors import GitError

    root = _repo(tmp_path)
    if os.geteuid() != 0:
        pytest.fail("this test changes file ownership and runs as root (as the suite does on this machine kind)")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, 65534, 65534)
    try:
        with pytest.raises(GitError, match=r"git status in .* failed"):
            dirty_paths(root, ["ctx"])
    finally:
        shutil.rmtree(root)
    assert dirty_paths(tmp_path, ["ctx"]) == []  # outside any checkout there is nothing to compare with
