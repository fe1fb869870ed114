"""What of a build context reaches BuildKit: .dockerignore patterns, exceptions and the Dockerfile."""

from __future__ import annotations

from pathlib import Path

import pytest

from release.buildcontext import files_sent, ignored


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
