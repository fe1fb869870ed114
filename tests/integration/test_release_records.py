"""Where a release keeps its records: releases.jsonl beside the build events the run was told to use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_release_gitops import clone, git, run  # noqa: F401 - `clone`: the fixture, found by its name

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack


def test_events_file_option_puts_the_release_record_beside_it(
    devstack: Devstack,
    clone: tuple[Path, Path],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    # `runtime --events-file F` with a promotion appends releases.jsonl in F's folder, not in the default state folder.
    local, remote = clone
    state = tmp_path / "state"
    events = tmp_path / "ci-artifacts" / "build-events.jsonl"
    result = run(
        devstack,
        local,
        tmp_path,
        "runtime",
        "--events-file",
        str(events),
        "--json",
        FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS="1",
        FRACTALOPS_BUILD_EVENTS_FILE="",
        FRACTALOPS_EVENTS_DIR="",
        XDG_STATE_HOME=str(state),
        FRACTALOPS_GITOPS_BRANCH=git(local, "rev-parse", "--abbrev-ref", "HEAD"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert len(events.read_text().splitlines()) == len(document["targets"])
    records = [json.loads(line) for line in (events.parent / "releases.jsonl").read_text().splitlines()]
    assert [r["commit"] for r in records] == [git(remote, "rev-parse", git(local, "rev-parse", "--abbrev-ref", "HEAD"))]
    assert not list(state.rglob("releases.jsonl"))
    assert f"record in {events.parent / 'releases.jsonl'}" in result.stderr
