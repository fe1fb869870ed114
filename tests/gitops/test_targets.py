"""The targets file: the committed one is valid and matches its values files; bad files fail in one line."""

from __future__ import annotations

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
        assert target.target == name
        assert target.image == f"fractalops-{name}"
        assert (PROJECT / target.values.file).is_file()
        assert (PROJECT / target.context / target.dockerfile).is_file()
        values = read_values((PROJECT / target.values.file).read_text(), list(target.values.paths().values()))
        assert values[target.values.repository] == target.repository(topology)
        assert DIGEST.match(values[target.values.digest] or "")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "targets:\n  api: {context: c, target: api, image: i, values: {file: f, repository: r, digest: d}, extra: 1}\n",
            "targets.api.extra: 1: unknown key",
        ),
        (
            "targets:\n  api: {context: /abs, target: api, image: i, values: {file: f, repository: r, digest: d}}\n",
            "targets.api.context: '/abs'",
        ),
        (
            "targets:\n  api: {context: c, target: api, image: i, values: {file: ../f, repository: r, digest: d}}\n",
            "targets.api.values.file",
        ),
        (
            "targets:\n  api: {context: c, target: api, image: i, values: {file: f, repository: 'a..b', digest: d}}\n",
            "targets.api.values.repository",
        ),
        (
            "targets:\n  api: {context: c, target: api, image: Bad_Name, values: {file: f, repository: r, digest: d}}\n",
            "targets.api.image",
        ),
        ("targets:\n  api: {context: c, target: api, image: i}\n", "targets.api.values"),
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
