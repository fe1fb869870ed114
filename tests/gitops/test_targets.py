"""The targets file: the committed one is valid and matches its values files; bad files fail in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from release.errors import ConfigError
from release.gitops.yamledit import read_values
from release.imageref import DIGEST
from release.targets import load_targets
from release.topology import load_topology

PROJECT = Path(__file__).resolve().parents[2]
TARGETS = PROJECT / "ops/containers/fractalops/targets.yaml"


def test_committed_targets_pin_their_images_in_the_committed_values_files() -> None:
    # api and worker are configured, and each values file holds its repository and a sha256 digest at the keys.
    targets = load_targets(TARGETS)
    topology = load_topology(PROJECT / "ops/topology/fractalops.yaml")
    assert sorted(targets) == ["api", "worker"]
    for name, target in targets.items():
        assert target.stage == name
        assert target.image == f"fractalops-{name}"
        assert (PROJECT / target.values.file).is_file()
        assert (PROJECT / target.context / target.dockerfile).is_file()
        values = read_values((PROJECT / target.values.file).read_text(), list(target.values.paths().values()))
        assert values[target.values.repository] == target.repository(topology)
        assert DIGEST.fullmatch(values[target.values.digest] or "")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "targets:\n  api: {context: c, stage: api, image: i, values: {file: f, repository: r, digest: d}, extra: 1}\n",
            "targets.api.extra: 1: unknown key",
        ),
        (
            "targets:\n  api: {context: /abs, stage: api, image: i, values: {file: f, repository: r, digest: d}}\n",
            "targets.api.context: '/abs'",
        ),
        (
            "targets:\n  api: {context: c, stage: api, image: i, values: {file: ../f, repository: r, digest: d}}\n",
            "targets.api.values.file",
        ),
        (
            "targets:\n  api: {context: c, stage: api, image: i, values: {file: f, repository: 'a..b', digest: d}}\n",
            "targets.api.values.repository",
        ),
        (
            "targets:\n  api: {context: c, stage: api, image: Bad_Name, values: {file: f, repository: r, digest: d}}\n",
            "targets.api.image",
        ),
        ("targets:\n  api: {context: c, stage: api, image: i}\n", "targets.api.values"),
        ("targets: {}\n", "at least one target"),
        ("targets: [\n", "not valid YAML"),
    ],
)
def test_bad_targets_file_is_a_config_error_naming_file_field_and_value(
    tmp_path: Path, body: str, problem: str
) -> None:
    # Unknown keys, escaping paths, bad key paths and broken YAML name the file, the field path and the value.
    path = tmp_path / "targets.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_targets(path)
    assert str(caught.value).startswith(str(path))
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`fractalops-release runtime --dry-run …` in a child process (a hang fails at `timeout`, not the suite)."""
    exe = Path(sys.executable).with_name("fractalops-release")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "FRACTALOPS_"))}
    env.update(FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE="1", CI="")
    return subprocess.run(
        [str(exe), "runtime", "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=PROJECT,
        check=False,
    )


def _one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_alias_bomb_targets_file_is_refused_at_once(tmp_path: Path) -> None:
    # Nested aliases in the targets file are refused (no anchors or aliases in configuration) within seconds.
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.read_text() + "  bomb:\n" + "".join(f"    {line}\n" for line in BOMB.splitlines()))
    line = _one_line_exit_2(_cli("--targets-file", str(path), timeout=30), str(path))
    assert "anchor" in line or "alias" in line


def test_anchor_in_targets_file_is_refused(tmp_path: Path) -> None:
    # A merge key reusing one target's values for another is refused: each target spells its keys out.
    path = tmp_path / "targets.yaml"
    text = TARGETS.read_text().replace("    values:\n", "    values: &values\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"targets\.yaml: line 12: .*anchor"):
        load_targets(path)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("targets:\n  api: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),
        (TARGETS.read_text().replace("dockerfile: Dockerfile", "dockerfile: Docker\udcfffile", 1), "UTF-8"),
    ],
    ids=["deep-nesting", "not-utf8"],
)
def test_unreadable_targets_file_is_one_line_naming_the_file(tmp_path: Path, body: str, problem: str) -> None:
    # Deep nesting and bytes that are not UTF-8 end in one line, exit 2, naming the file (no traceback).
    path = tmp_path / "targets.yaml"
    path.write_bytes(body.encode("utf-8", "surrogateescape"))
    assert problem in _one_line_exit_2(_cli("--targets-file", str(path)), str(path))


def test_fifo_as_targets_file_is_refused_without_waiting(tmp_path: Path) -> None:
    # A named pipe given as the targets file is refused at once instead of blocking on its open.
    fifo = tmp_path / "targets.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in _one_line_exit_2(_cli("--targets-file", str(fifo), timeout=20), str(fifo))


def test_huge_value_in_a_targets_error_is_cut_short(tmp_path: Path) -> None:
    # An error shows a short prefix of a huge value, never the whole input.
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.read_text().replace("image: fractalops-api", "image: " + "Y" * 1_000_000, 1))
    with pytest.raises(ConfigError, match=r"targets\.api\.image") as caught:
        load_targets(path)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("name", ["api\n", "api\n\n", " api"])
def test_target_name_with_a_newline_or_space_is_refused(tmp_path: Path, name: str) -> None:
    # The name is matched whole: "api\n" would otherwise write a broken $GITHUB_OUTPUT entry.
    body = TARGETS.read_text().replace("  api:\n", f"  {json.dumps(name)}:\n", 1)
    path = tmp_path / "targets.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=r"targets\..*\.name") as caught:
        load_targets(path)
    assert "\n" not in str(caught.value)
