"""Byte-exact values edits: golden files, bad inputs and a property test."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.errors import ConfigError, GuardRefusal
from release.gitops.yamledit import read_values, replace_values
from release.keypath import parse_path

GOLDEN = Path(__file__).parent / "golden"
DIGEST = "sha256:" + "b" * 64
SHA = "c" * 40


def changed_lines(before: str, after: str) -> dict[int, str]:
    """Line index → new line, for every line difflib reports as replaced; fails on inserts or deletes."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    result: dict[int, str] = {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        assert tag == "replace", f"lines inserted or deleted: {tag} {old[i1:i2]} {new[j1:j2]}"
        assert i2 - i1 == j2 - j1, f"line count changed: {old[i1:i2]} {new[j1:j2]}"
        result.update({i1 + k: new[j1 + k] for k in range(i2 - i1)})
    return result


GOLDEN_CASES = [
    (
        "comments.yaml",
        {"image.tag": ("sha-0000000", "sha-abcdef1"), "image.digest": (None, DIGEST)},
        {12: "  tag: sha-abcdef1 # keep me\n", 13: f"  digest: {DIGEST}   # pinned by promote\n"},
    ),
    (
        "crlf.yaml",
        {"image.tag": ("sha-0000000", "sha-abcdef1"), "image.digest": ("sha256:" + "a" * 64, DIGEST)},
        {3: '  tag: "sha-abcdef1"  # quoted tag\r\n', 4: f"  digest: {DIGEST}\r\n"},
    ),
    (
        "flow.yaml",
        {"image.tag": (None, "sha-abcdef1"), "image.digest": (None, DIGEST)},
        {1: f"image: {{repository: ghcr.io/yamonco/fractalops-api, tag: 'sha-abcdef1', digest: \"{DIGEST}\"}}\n"},
    ),
    (
        "quoted.yaml",
        {
            "image.repository": (None, "127.0.0.1:5000/yamonco/fractalops-api"),
            "image.tag": (None, "it's"),
            "image.digest": (None, DIGEST),
            'podAnnotations."fractalops.io/source-commit"': (None, SHA),
        },
        {
            1: '    repository: "127.0.0.1:5000/yamonco/fractalops-api"\n',
            2: "    tag: 'it''s'\n",
            3: f'    digest: "{DIGEST}"   # double quoted\n',
            5: f"    \"fractalops.io/source-commit\": '{SHA}'\n",
        },
    ),
    (
        "multidoc.yaml",
        {"image.digest": (None, DIGEST), "image.tag": (None, "1234567")},
        {8: '  tag: "1234567"\n', 9: f"  digest: {DIGEST}\n"},
    ),
]


@pytest.mark.parametrize(("name", "edits", "expected"), GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_golden_edit_changes_exactly_the_edited_lines(
    name: str, edits: dict[str, tuple[str | None, str]], expected: dict[int, str]
) -> None:
    # Only the lines holding the edited scalars differ, and they read exactly as expected (comments, quotes, CRLF kept).
    before = (GOLDEN / name).read_bytes().decode()
    after = replace_values(before, edits, source=name)
    assert changed_lines(before, after) == expected
    assert read_values(after, list(edits)) == {path: new for path, (_, new) in edits.items()}


def test_golden_crlf_file_really_has_crlf_line_endings() -> None:
    # The CRLF golden file is stored with CRLF (guards against a checkout that normalised it).
    assert b"\r\n" in (GOLDEN / "crlf.yaml").read_bytes()


def test_unchanged_value_leaves_the_text_identical() -> None:
    # Writing the value a key already holds returns the very same text.
    before = (GOLDEN / "comments.yaml").read_text()
    assert replace_values(before, {"image.tag": ("sha-0000000", "sha-0000000")}) == before


BAD_CASES = [
    ("nodigest.yaml", "image.digest", "key not found"),
    ("alias.yaml", "image.digest", "reached through an alias"),
    ("merge.yaml", "image.digest", "reached through a merge key"),
    ("block.yaml", "image.digest", "block scalar"),
    ("twodocs.yaml", "image.digest", "found in 2 YAML documents"),
    ("broken.yaml", "image.digest", "not valid YAML"),
    ("nested.yaml", "image.repository", "not a scalar"),
    ("comments.yaml", "defaults.cpu", "carries an anchor"),
    ("comments.yaml", "args.0", "is not a mapping"),
]


@pytest.mark.parametrize(("name", "path", "problem"), BAD_CASES, ids=[f"{c[0]}-{c[2]}" for c in BAD_CASES])
def test_uneditable_key_is_a_one_line_config_error_naming_file_and_key(name: str, path: str, problem: str) -> None:
    # Missing keys, aliases, merge keys, block scalars, ambiguous documents and broken YAML are refused in one line.
    text = (GOLDEN / name).read_text()
    with pytest.raises(ConfigError) as caught:
        replace_values(text, {path: (None, DIGEST)}, source=name)
    message = str(caught.value)
    assert problem in message
    assert message.startswith(f"{name}:")
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_compare_and_swap_mismatch_is_a_guard_refusal() -> None:
    # An edit that expects a different old value is refused (exit 1), naming what the file holds.
    text = (GOLDEN / "comments.yaml").read_text()
    with pytest.raises(GuardRefusal, match="holds 'sha-0000000', expected 'sha-9999999'") as caught:
        replace_values(text, {"image.tag": ("sha-9999999", "sha-abcdef1")}, source="comments.yaml")
    assert caught.value.exit_code == 1


def test_key_path_with_quoted_segment_keeps_its_dots() -> None:
    # A double-quoted segment may hold dots; malformed paths are config errors.
    assert parse_path('podAnnotations."fractalops.io/source-commit"') == (
        "podAnnotations",
        "fractalops.io/source-commit",
    )
    for bad in ("a..b", "a.", '"unclosed', ""):
        with pytest.raises(ConfigError):
            parse_path(bad)


# --- property test ---------------------------------------------------------------------------------

_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_PLAIN = st.from_regex(r"[a-z][a-z0-9._/-]{0,20}", fullmatch=True)
_COMMENT = st.one_of(st.just(""), st.from_regex(r"  # [ -~]{0,30}", fullmatch=True).map(lambda s: s.rstrip()))


def _scalar(value: str, style: str) -> str:
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return '"' + value + '"'
    return value


@st.composite
def values_files(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A values file with random keys, comments, quoting and indentation around `image.tag` and `image.digest`."""
    indent = " " * draw(st.integers(min_value=1, max_value=6))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines: list[str] = []
    if draw(st.booleans()):
        lines.append("# " + draw(_WORDS))
    if draw(st.booleans()):
        lines.append("---")
    top = draw(st.lists(_WORDS.filter(lambda w: w != "image"), unique=True, max_size=4))
    for key in top[: len(top) // 2]:
        lines.append(f"{key}: {_scalar(draw(_PLAIN), draw(st.sampled_from(['', chr(39), chr(34)])))}{draw(_COMMENT)}")
    lines.append("image:" + draw(_COMMENT))
    inner = draw(st.lists(_WORDS.filter(lambda w: w not in {"tag", "digest"}), unique=True, max_size=3))
    fields = [("tag", draw(_PLAIN)), ("digest", "sha256:" + "0" * 64), *[(k, draw(_PLAIN)) for k in inner]]
    order = draw(st.permutations(fields))
    styles: dict[str, str] = {}
    for key, value in order:
        style = draw(st.sampled_from(["", "'", '"']))
        styles[key] = style
        if draw(st.booleans()):
            lines.append(indent + "# about " + key)
        lines.append(f"{indent}{key}: {_scalar(value, style)}{draw(_COMMENT)}")
    if draw(st.booleans()):
        lines.append("")
    for key in top[len(top) // 2 :]:
        lines.append(f"{key}:")
        lines.append(f"{indent}- {draw(_PLAIN)}{draw(_COMMENT)}")
    return newline.join(lines) + newline, styles


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values_files(), _PLAIN, st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_property_bytes_outside_edited_scalars_are_unchanged(
    case: tuple[str, dict[str, str]], tag: str, hexdigest: str
) -> None:
    # For any generated file, removing the edited scalars from both texts leaves identical bytes, and the new values read back.
    text, _styles = case
    edits = {"image.tag": (None, tag), "image.digest": (None, "sha256:" + hexdigest)}
    after = replace_values(text, edits)
    assert read_values(after, list(edits)) == {"image.tag": tag, "image.digest": "sha256:" + hexdigest}
    from release.gitops.yamledit import locate

    def outside(source: str) -> str:
        spans = sorted((hit.start, hit.end) for hit in locate(source, list(edits)).values())
        pieces, cursor = [], 0
        for start, end in spans:
            pieces.append(source[cursor:start])
            cursor = end
        pieces.append(source[cursor:])
        return "\x00".join(pieces)

    assert outside(after) == outside(text)


def test_duplicate_key_is_a_one_line_config_error() -> None:
    # A values file with a duplicate key is refused with the file and line, not a traceback.
    text = "image:\n  repository: r\n  digest: sha256:" + "a" * 64 + "\nreplicaCount: 2\nreplicaCount: 3\n"
    with pytest.raises(ConfigError, match=r"values\.yaml: line 5: not valid YAML: found duplicate key"):
        replace_values(text, {"image.digest": (None, "sha256:" + "b" * 64)}, source="values.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffimage:\n  tag: x\n  digest: ~\n",  # a byte-order mark (libyaml does not count it in its marks)
        "# caf\u00e9 \U0001f600\nimage:\n  tag: x  # \u4e2d\n  digest: ~\n",  # characters beyond the BMP before the keys
        "other: &a.b 1\nmore: *a.b\nimage:\n  tag: x\n  digest: ~\n",  # an anchor name libyaml refuses
        "other: [b:c]\nimage:\n  tag: x\n  digest: ~\n",  # a plain scalar libyaml refuses in a flow sequence
    ],
    ids=["bom", "astral", "anchor-name", "flow-colon"],
)
def test_edit_lands_on_the_scalar_whatever_the_parser_and_the_characters(text: str) -> None:
    # The splice hits exactly the scalars, with a BOM or non-BMP characters before them, and for YAML only the
    # pure-Python parser reads (it is asked when libyaml refuses the text).
    after = replace_values(text, {"image.tag": ("x", "sha-abcdef1"), "image.digest": (None, DIGEST)})
    assert after == text.replace("tag: x", "tag: sha-abcdef1").replace("digest: ~", f"digest: {DIGEST}")


def test_unsupported_yaml_version_is_a_one_line_config_error() -> None:
    # `%YAML 1.3` makes ruamel.yaml assert; it is still one line naming the file.
    with pytest.raises(ConfigError, match=r"values\.yaml: not valid YAML") as caught:
        read_values("%YAML 1.3\n---\nimage:\n  tag: x\n", ["image.tag"], source="values.yaml")
    assert "\n" not in str(caught.value)
