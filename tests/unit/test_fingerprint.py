"""A build's inputs as one digest: .dockerignore rules, the context digest, the Dockerfile's images, the fingerprint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from release.build import context as context_module
from release.build.context import context_digest
from release.build.dockerfile import external_images
from release.build.dockerignore import IgnoreRules, ignore_patterns
from release.build.reuse import FINGERPRINT_VERSION, fingerprint
from release.errors import Unknowable

REPO = Path(__file__).resolve().parents[2]
FRACTALOPS_DOCKERFILE = REPO / "ops" / "containers" / "fractalops" / "Dockerfile"


def _context(tmp_path: Path) -> tuple[Path, Path]:
    """A small context with a Dockerfile outside it."""
    context = tmp_path / "ctx"
    (context / "app").mkdir(parents=True)
    (context / "app" / "main.py").write_text("print('hi')\n")
    (context / "README.md").write_text("readme\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:trixie-slim\nCOPY . /app\n")
    return context, dockerfile


# --- .dockerignore parsing ------------------------------------------------------------------------------------------


def test_ignore_file_lines_are_trimmed_cleaned_and_comments_dropped(tmp_path: Path) -> None:
    # Comments, blank lines, BOM, ./ and leading / (also after !) are handled as ignorefile.ReadAll does.
    (tmp_path / ".dockerignore").write_bytes(
        "\ufeff# comment\n\n  ./build/  \n/node_modules\n! /keep\r\na/../b\n **/*.pyc\n".encode()
    )
    patterns = ignore_patterns(tmp_path, tmp_path / "Dockerfile")
    assert patterns == ("build", "node_modules", "!keep", "b", "**/*.pyc")


def test_a_hash_after_whitespace_is_a_pattern_not_a_comment(tmp_path: Path) -> None:
    # ReadAll checks for `#` before trimming, so an indented `#x` is a pattern.
    (tmp_path / ".dockerignore").write_text("  #x\n")
    assert ignore_patterns(tmp_path, tmp_path / "Dockerfile") == ("#x",)


def test_no_ignore_file_means_no_patterns(tmp_path: Path) -> None:
    # Without either ignore file nothing is excluded.
    assert ignore_patterns(tmp_path, tmp_path / "Dockerfile") == ()


def test_the_dockerfile_specific_ignore_file_wins_over_the_contexts(tmp_path: Path) -> None:
    # `api.Dockerfile.dockerignore` beside the Dockerfile replaces `<context>/.dockerignore`.
    context = tmp_path / "ctx"
    context.mkdir()
    (context / ".dockerignore").write_text("from-context\n")
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "api.Dockerfile.dockerignore").write_text("from-dockerfile\n")
    assert ignore_patterns(context, docker_dir / "api.Dockerfile") == ("from-dockerfile",)
    assert ignore_patterns(context, docker_dir / "worker.Dockerfile") == ("from-context",)


# --- matching -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["*.pyc"], "a.pyc", True),
        (["*.pyc"], "pkg/a.pyc", False),  # `*` is root-only in Docker, unlike gitignore
        (["**/*.pyc"], "pkg/sub/a.pyc", True),
        (["**/*.pyc"], "a.pyc", True),
        (["**/x"], "x", True),
        (["**/x"], "a/b/x", True),
        (["**/x"], "a/b/y", False),
        (["dir"], "dir/a/b", True),
        (["dir"], "dirt", False),
        (["dir/**"], "dir/a", True),
        (["dir", "!dir/keep"], "dir/keep", False),
        (["dir", "!dir/keep"], "dir/other", True),
        (["dir", "!dir/keep"], "dir/keep/inner", False),
        (["*.md", "!README.md"], "README.md", False),
        (["!README.md", "*.md"], "README.md", True),  # the last matching pattern decides
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[ab].txt"], "b.txt", True),
        (["[ab].txt"], "c.txt", False),
        (["[^ab].txt"], "c.txt", True),
        (["[^ab].txt"], "a.txt", False),
        (["[a-c]x"], "bx", True),
        (["[a-c]x"], "dx", False),
        (["b\\*q"], "b*q", True),
        (["b\\*q"], "bzq", False),
        (["a\\_b"], "a_b", True),
        (["a.txt"], "abtxt", False),  # `.` is literal
        (["./x"], "x", True),
        (["src/*/test_*.py"], "src/a/test_b.py", True),
        (["src/*/test_*.py"], "src/a/b/test_c.py", False),
        (["**foo"], "barfoo", True),  # moby's suffix match for a leading `**`
    ],
)
def test_exclusion_follows_moby_patternmatcher(patterns: list[str], path: str, expected: bool) -> None:
    # Each case is how MatchesOrParentMatches answers for these patterns.
    assert IgnoreRules(patterns).excluded(path) is expected


def test_patterns_from_the_ignore_file_with_dot_and_slash_prefixes_match_root_paths(tmp_path: Path) -> None:
    # `./x` and `/x` in the file both name `x` at the context root.
    (tmp_path / ".dockerignore").write_text("./x\n/y\n")
    rules = IgnoreRules(ignore_patterns(tmp_path, tmp_path / "Dockerfile"))
    assert rules.excluded("x")
    assert rules.excluded("y/z")
    assert not rules.excluded("a/x")


@pytest.mark.parametrize("pattern", ["!", "[ab", "ab\\", "[]a]", "a\\d"])
def test_a_pattern_buildkit_refuses_or_reads_differently_is_unknowable(pattern: str) -> None:
    # Bad patterns fail the real build; escaped letters mean regexp classes in Go, so neither is guessed.
    with pytest.raises(Unknowable):
        IgnoreRules([pattern])


# --- the context digest ---------------------------------------------------------------------------------------------


def test_the_digest_is_stable_for_an_unchanged_context(tmp_path: Path) -> None:
    # Two digests of the same files agree.
    context, dockerfile = _context(tmp_path)
    assert context_digest(context, dockerfile) == context_digest(context, dockerfile)


def test_changing_a_files_content_changes_the_digest(tmp_path: Path) -> None:
    # New bytes in a sent file are a new input.
    context, dockerfile = _context(tmp_path)
    before = context_digest(context, dockerfile)
    (context / "app" / "main.py").write_text("print('bye')\n")
    assert context_digest(context, dockerfile) != before


def test_setting_the_exec_bit_changes_the_digest(tmp_path: Path) -> None:
    # Permission bits reach the image, so they are an input.
    context, dockerfile = _context(tmp_path)
    before = context_digest(context, dockerfile)
    (context / "app" / "main.py").chmod(0o755)
    assert context_digest(context, dockerfile) != before


def test_adding_an_empty_directory_changes_the_digest(tmp_path: Path) -> None:
    # `COPY . /app` would create the folder, so it is an input.
    context, dockerfile = _context(tmp_path)
    before = context_digest(context, dockerfile)
    (context / "empty").mkdir()
    assert context_digest(context, dockerfile) != before


def test_adding_a_symlink_changes_the_digest_and_its_target_matters(tmp_path: Path) -> None:
    # A symlink is sent as a link: adding one, or pointing it elsewhere, is a new input.
    context, dockerfile = _context(tmp_path)
    before = context_digest(context, dockerfile)
    (context / "link").symlink_to("README.md")
    with_link = context_digest(context, dockerfile)
    (context / "link").unlink()
    (context / "link").symlink_to("app/main.py")
    assert len({before, with_link, context_digest(context, dockerfile)}) == 3


def test_a_symlink_to_a_directory_is_not_followed(tmp_path: Path) -> None:
    # Files behind a directory symlink are not the context's; changing them does not change the digest.
    context, dockerfile = _context(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("1")
    (context / "linked").symlink_to(outside)
    before = context_digest(context, dockerfile)
    (outside / "f").write_text("2")
    assert context_digest(context, dockerfile) == before


def test_changing_the_dockerfile_outside_the_context_changes_the_digest(tmp_path: Path) -> None:
    # The Dockerfile is an input even when it does not live in the context.
    context, dockerfile = _context(tmp_path)
    before = context_digest(context, dockerfile)
    dockerfile.write_text("FROM debian:trixie-slim\nCOPY app /app\n")
    assert context_digest(context, dockerfile) != before


def test_touching_mtime_does_not_change_the_digest(tmp_path: Path) -> None:
    # BuildKit's cache keys ignore modification times.
    context, dockerfile = _context(tmp_path)
    before = context_digest(context, dockerfile)
    os.utime(context / "app" / "main.py", (1_000_000, 1_000_000))
    os.utime(context / "app", (1_000_000, 1_000_000))
    assert context_digest(context, dockerfile) == before


def test_an_ignored_file_does_not_change_the_digest(tmp_path: Path) -> None:
    # An excluded file is never sent, so neither its content nor its existence matters.
    context, dockerfile = _context(tmp_path)
    (context / ".dockerignore").write_text("*.log\n")
    (context / "build.log").write_text("one\n")
    before = context_digest(context, dockerfile)
    (context / "build.log").write_text("two\n")
    (context / "other.log").write_text("new\n")
    assert context_digest(context, dockerfile) == before


def test_a_root_pyc_is_ignored_but_a_nested_one_is_sent(tmp_path: Path) -> None:
    # `*.pyc` excludes only at the context root, as in Docker.
    context, dockerfile = _context(tmp_path)
    (context / ".dockerignore").write_text("*.pyc\n")
    (context / "root.pyc").write_bytes(b"1")
    (context / "app" / "nested.pyc").write_bytes(b"1")
    before = context_digest(context, dockerfile)
    (context / "root.pyc").write_bytes(b"2")
    assert context_digest(context, dockerfile) == before
    (context / "app" / "nested.pyc").write_bytes(b"2")
    assert context_digest(context, dockerfile) != before


def test_an_exception_inside_an_excluded_directory_is_sent(tmp_path: Path) -> None:
    # `dir` then `!dir/keep`: the kept file is an input, its excluded siblings are not.
    context, dockerfile = _context(tmp_path)
    (context / ".dockerignore").write_text("dir\n!dir/keep\n")
    (context / "dir").mkdir()
    (context / "dir" / "keep").write_text("1")
    (context / "dir" / "drop").write_text("1")
    before = context_digest(context, dockerfile)
    (context / "dir" / "drop").write_text("2")
    assert context_digest(context, dockerfile) == before
    (context / "dir" / "keep").write_text("2")
    assert context_digest(context, dockerfile) != before


def test_the_dockerfile_specific_ignore_file_decides_what_the_digest_covers(tmp_path: Path) -> None:
    # With `Dockerfile.dockerignore` beside the Dockerfile, the context's .dockerignore patterns do not apply.
    context, dockerfile = _context(tmp_path)
    (context / ".dockerignore").write_text("app\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("README.md\n")
    before = context_digest(context, dockerfile)
    (context / "README.md").write_text("changed\n")
    assert context_digest(context, dockerfile) == before
    (context / "app" / "main.py").write_text("changed\n")
    assert context_digest(context, dockerfile) != before


def test_the_mode_of_an_excluded_directory_holding_an_exception_is_an_input(tmp_path: Path) -> None:
    # BuildKit sends the folders above a re-included file, so their permission bits count.
    context, dockerfile = _context(tmp_path)
    (context / ".dockerignore").write_text("dir\n!dir/keep\n")
    (context / "dir").mkdir()
    (context / "dir" / "keep").write_text("1")
    before = context_digest(context, dockerfile)
    (context / "dir").chmod(0o700)
    assert context_digest(context, dockerfile) != before


def test_hard_linking_two_sent_files_changes_the_digest(tmp_path: Path) -> None:
    # Two paths becoming one file (same content before and after) is recorded.
    context, dockerfile = _context(tmp_path)
    (context / "a").write_text("same")
    (context / "b").write_text("same")
    before = context_digest(context, dockerfile)
    (context / "b").unlink()
    os.link(context / "a", context / "b")
    assert context_digest(context, dockerfile) != before


def test_an_extended_attribute_changes_the_digest(tmp_path: Path) -> None:
    # BuildKit's file hashes cover xattrs, so the digest does too.
    context, dockerfile = _context(tmp_path)
    before = context_digest(context, dockerfile)
    try:
        os.setxattr(context / "README.md", "user.note", b"x")
    except (OSError, AttributeError):
        pytest.skip("no user xattrs on this filesystem")
    assert context_digest(context, dockerfile) != before


def test_changing_the_dockerignore_itself_changes_the_digest(tmp_path: Path) -> None:
    # The .dockerignore is sent like any other file.
    context, dockerfile = _context(tmp_path)
    (context / ".dockerignore").write_text("*.log\n")
    before = context_digest(context, dockerfile)
    (context / ".dockerignore").write_text("*.log\n*.tmp\n")
    assert context_digest(context, dockerfile) != before


def test_moving_content_between_files_changes_the_digest(tmp_path: Path) -> None:
    # The framing keeps paths and contents apart: swapping two files' contents is a change.
    context, dockerfile = _context(tmp_path)
    (context / "a").write_text("x")
    (context / "b").write_text("y")
    before = context_digest(context, dockerfile)
    (context / "a").write_text("y")
    (context / "b").write_text("x")
    assert context_digest(context, dockerfile) != before


def test_a_read_error_is_unknowable_even_for_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads any file, so a failing open (a fake) stands in for an unreadable one.
    context, dockerfile = _context(tmp_path)
    real_open = open

    def failing_open(path: str, *args: object, **kwargs: object) -> object:
        if str(path).endswith("main.py"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(context_module, "open", failing_open, raising=False)
    with pytest.raises(Unknowable, match=r"main\.py: cannot read: Permission denied$"):
        context_digest(context, dockerfile)


def test_a_missing_dockerfile_is_unknowable(tmp_path: Path) -> None:
    # Without its Dockerfile the inputs are not known.
    context, _ = _context(tmp_path)
    with pytest.raises(Unknowable, match="cannot read"):
        context_digest(context, tmp_path / "nope")


# --- the Dockerfile's images ----------------------------------------------------------------------------------------


def test_the_projects_dockerfile_reads_only_its_base_image() -> None:
    # The fractalops Dockerfile's only external image is its BASE_IMAGE default.
    assert external_images(FRACTALOPS_DOCKERFILE.read_text(), {}) == ("debian:trixie-slim",)


def test_a_build_argument_overrides_the_projects_base_image() -> None:
    # `--build-arg BASE_IMAGE=…` replaces the global ARG's default in FROM.
    text = FRACTALOPS_DOCKERFILE.read_text()
    assert external_images(text, {"BASE_IMAGE": "reg:5000/base:1"}) == ("reg:5000/base:1",)


def test_stages_scratch_and_duplicates_are_not_external() -> None:
    # A FROM naming an earlier stage (any case) or scratch reads no image; repeats are listed once.
    text = (
        "FROM python:3.11 AS Build\n"
        "FROM build AS test\n"
        "FROM scratch\n"
        "FROM python:3.11\n"
        "FROM nexus.nexus.svc:8083/library/python:3.11@sha256:abc AS final\n"
    )
    assert external_images(text, {}) == ("python:3.11", "nexus.nexus.svc:8083/library/python:3.11@sha256:abc")


def test_a_later_stage_name_in_from_is_still_an_image() -> None:
    # FROM can only refer to an earlier stage; a later stage's name is an image reference.
    assert external_images("FROM later\nFROM alpine AS later\n", {}) == ("later", "alpine")


def test_copy_from_and_mount_from_name_images_unless_they_name_stages() -> None:
    # --from names a stage (any stage in the file, or an index) or else an image.
    text = (
        "FROM alpine AS base\n"
        "COPY --from=base /a /a\n"
        "COPY --from=1 /b /b\n"
        "COPY --from=later /c /c\n"
        "COPY --chown=1:1 --from=busybox:1.36 /bin/sh /sh\n"
        "RUN --mount=type=cache,target=/root/.cache --mount=type=bind,from=golang:1.22,target=/go true\n"
        "RUN --mount=type=bind,from=base,target=/x true\n"
        "FROM base AS later\n"
    )
    assert external_images(text, {}) == ("alpine", "busybox:1.36", "golang:1.22")


def test_the_syntax_directive_is_an_external_image() -> None:
    # The frontend image named by `# syntax=` is read by the build, before any FROM.
    text = "# Syntax = docker/dockerfile:1.7\nFROM alpine\n"
    assert external_images(text, {}) == ("docker/dockerfile:1.7", "alpine")


def test_a_syntax_line_after_a_comment_is_only_a_comment() -> None:
    # Directives are read only before the first comment, blank line or instruction.
    assert external_images("# hello\n# syntax=docker/dockerfile:1\nFROM alpine\n", {}) == ("alpine",)
    assert external_images("\n# syntax=docker/dockerfile:1\nFROM alpine\n", {}) == ("alpine",)


def test_the_buildkit_syntax_build_argument_is_an_external_image() -> None:
    # BUILDKIT_SYNTAX replaces the frontend, so its image is read too.
    assert external_images("FROM alpine\n", {"BUILDKIT_SYNTAX": "my/frontend:1"}) == ("my/frontend:1", "alpine")


def test_the_escape_directive_changes_the_continuation_character() -> None:
    # With escape=` a trailing backtick joins lines, so the split FROM names one image.
    text = "# escape=`\nFROM `\n  mcr.microsoft.com/windows/servercore:ltsc2022 `\n  AS base\nCOPY --from=base C:\\a C:\\b\n"
    assert external_images(text, {}) == ("mcr.microsoft.com/windows/servercore:ltsc2022",)


def test_continuations_skip_comment_and_empty_lines() -> None:
    # Comment and blank lines inside a continuation are dropped, as BuildKit's parser does.
    text = "FROM \\\n# a comment\n\n   alpine:3.20 \\\n   AS base\nFROM base\n"
    assert external_images(text, {}) == ("alpine:3.20",)


def test_instructions_are_case_insensitive_and_may_be_tab_separated() -> None:
    # `from\talpine AS b` is a FROM like any other.
    assert external_images("from\talpine:3 as b\nFrom b\n", {}) == ("alpine:3",)


def test_heredoc_bodies_are_not_read_as_instructions() -> None:
    # Lines inside RUN/COPY heredocs (plain, <<-, quoted) are content, not FROM instructions.
    text = (
        "FROM alpine\n"
        "RUN <<EOF\n"
        "FROM evil:1\n"
        "EOF\n"
        "COPY <<-'END' /x\n"
        "\tFROM evil:2\n"
        "\tEND\n"
        'RUN cat <<"A" > /y\n'
        "FROM evil:3\n"
        "A\n"
        "FROM busybox\n"
    )
    assert external_images(text, {}) == ("alpine", "busybox")


@pytest.mark.parametrize(
    ("text", "build_args", "expected"),
    [
        ("ARG A=alpine\nFROM $A\n", {}, ("alpine",)),
        ("ARG A=alpine\nFROM ${A}:3\n", {}, ("alpine:3",)),
        ("ARG A\nFROM ${A:-busybox}\n", {}, ("busybox",)),
        ("ARG A=\nFROM ${A:-busybox}\n", {}, ("busybox",)),
        ("ARG A=\nFROM alpine${A-:9}\n", {}, ("alpine",)),
        ("ARG A\nFROM alpine${A-:9}\n", {}, ("alpine:9",)),
        ("ARG A=x\nFROM alpine${A:+:3}\n", {}, ("alpine:3",)),
        ("ARG A=\nFROM alpine${A+:4}${A:+:5}\n", {}, ("alpine:4",)),
        ('ARG REG="r:5000" IMG=${REG}/app\nFROM $IMG\n', {}, ("r:5000/app",)),
        ("ARG A=alpine\nFROM ${A}\n", {"A": "debian"}, ("debian",)),
        ("ARG A\nFROM ${A}\n", {"A": "debian"}, ("debian",)),
        ("ARG V=3\nFROM --platform=$BUILDPLATFORM alpine:$V AS b\n", {}, ("alpine:3",)),
    ],
)
def test_global_args_and_build_args_are_substituted_in_from(
    text: str, build_args: dict[str, str], expected: tuple[str, ...]
) -> None:
    # Global ARGs (defaults or build arguments) fill $NAME and the ${NAME…} forms.
    assert external_images(text, build_args) == expected


@pytest.mark.parametrize(
    "text",
    [
        "FROM $UNDECLARED\n",  # undeclared (or an automatic platform arg): not told by the files
        "ARG A\nFROM $A\n",  # declared, unset, no default: an empty reference
        "ARG A=alpine\nFROM ${A%:*}\n",  # a substitution form this module does not evaluate
        "FROM alpine AS base\nARG X=y\nFROM $X\n",  # a stage's ARG is not global
        "FROM alpine\nCOPY --from=$X /a /b\n",
        "FROM alpine\nADD https://example.com/a.tgz /a\n",
    ],
)
def test_an_image_the_files_do_not_tell_is_unknowable(text: str) -> None:
    # Where the image cannot be told from the Dockerfile and build arguments, the answer is Unknowable.
    with pytest.raises(Unknowable):
        external_images(text, {})


def test_an_unresolved_from_names_itself_in_the_message() -> None:
    # The message says which FROM could not be resolved.
    with pytest.raises(Unknowable, match=r"^FROM \$\{IMG\}: cannot tell which image it names$"):
        external_images("FROM ${IMG}\n", {})


# --- the fingerprint ------------------------------------------------------------------------------------------------


def test_the_fingerprint_ignores_key_order_and_includes_the_version() -> None:
    # Canonical JSON: the same parts in another order give the same digest; the version is part of it.
    first = fingerprint({"b": [1, 2], "a": {"y": 1, "x": Path("/p")}})
    assert first == fingerprint({"a": {"x": Path("/p"), "y": 1}, "b": [1, 2]})
    canonical = '{"a":{"x":"/p","y":1},"b":[1,2],"version":' + str(FINGERPRINT_VERSION) + "}"
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert first == expected


def test_any_changed_part_changes_the_fingerprint() -> None:
    # A different value for any part is a different fingerprint.
    assert fingerprint({"context": "a", "images": ["x"]}) != fingerprint({"context": "a", "images": ["y"]})
