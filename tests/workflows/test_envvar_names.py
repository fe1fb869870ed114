"""The FRACTALOPS_* names in the workflows, ops/ scripts and the driver agree with the settings (release/settings.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_tools import REPO, iter_steps, load_yaml, workflow_files

from release.settings import Settings, variable
from release.topology.env import render_env
from release.topology.load import load_topology
from release.topology.model import Topology

NAME = re.compile(r"\bFRACTALOPS_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
# release/devstack is the local test stack, not the release driver: its own variables are not read in CI.
NOT_THE_DRIVER = ("release/devstack/",)


def names() -> set[str]:
    """The variable of every setting the toolkit reads."""
    return {variable(name) for name in Settings.model_fields}


@pytest.fixture(scope="module")
def rendered() -> set[str]:
    """The names `fractalops-release topology render-env` can set (optional repositories included)."""
    data = load_topology(REPO / "ops" / "topology" / "fractalops.yaml").model_dump()
    data["nexus"]["repositories"]["apt_ubuntu"] = data["nexus"]["repositories"]["apt_ubuntu"] or "apt-ubuntu"
    return set(render_env(Topology.model_validate(data)))


def names_in(path: Path) -> set[str]:
    """Every FRACTALOPS_* name written in a file."""
    return set(NAME.findall(path.read_text(encoding="utf-8", errors="replace")))


def ops_files() -> list[Path]:
    """Every text file under ops/ (scripts, Dockerfiles, target lists)."""
    return [p for p in sorted((REPO / "ops").rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


def driver_files() -> list[Path]:
    """The toolkit's Python modules that run in a release."""
    return [
        p
        for p in sorted((REPO / "release").rglob("*.py"))
        if not p.relative_to(REPO).as_posix().startswith(NOT_THE_DRIVER)
    ]


def test_workflow_env_sets_only_names_the_toolkit_reads(workflow: Path) -> None:
    # Every FRACTALOPS_* variable a workflow sets in an `env:` block is one the settings declare.
    data = load_yaml(workflow)
    blocks = [data.get("env") or {}]
    blocks += [job.get("env") or {} for job in (data.get("jobs") or {}).values()]
    blocks += [step.get("env") or {} for _, step in iter_steps(data)]
    set_here = {key for block in blocks for key in block if str(key).startswith("FRACTALOPS_")}
    assert set_here <= names(), f"{workflow.name} sets names the settings do not declare: {set_here - names()}"


def test_workflow_names_are_declared_or_rendered(workflow: Path, rendered: set[str]) -> None:
    # Every FRACTALOPS_* name a workflow mentions is declared in the settings or set by `topology render-env`.
    unknown = names_in(workflow) - names() - rendered
    assert not unknown, f"{workflow.name}: unknown names {sorted(unknown)}"


def test_ops_names_are_declared_or_rendered(rendered: set[str]) -> None:
    # Every FRACTALOPS_* name in ops/ (release.sh, test.sh, ...) is declared or rendered.
    unknown = {(p.relative_to(REPO).as_posix(), n) for p in ops_files() for n in names_in(p) - names() - rendered}
    assert not unknown, f"unknown names in ops/: {sorted(unknown)}"


def test_driver_names_are_declared_or_rendered(rendered: set[str]) -> None:
    # Every FRACTALOPS_* name in the release driver's modules is declared or rendered.
    unknown = {(p.relative_to(REPO).as_posix(), n) for p in driver_files() for n in names_in(p) - names() - rendered}
    assert not unknown, f"unknown names in release/: {sorted(unknown)}"


def test_release_step_sets_the_gitops_switch() -> None:
    # The release workflow names the smoke/promote switch exactly as the settings do.
    text = (REPO / ".github" / "workflows" / "runtime-release.yml").read_text()
    assert "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS" in names()
    assert "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS" in set(NAME.findall(text))


def test_name_pattern_catches_a_typo(tmp_path: Path) -> None:
    # The check can fail: a misspelt name in a workflow is neither declared nor rendered.
    bad = tmp_path / "wf.yml"
    bad.write_text("env:\n  FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOP: '0'\n  X: $FRACTALOPS_\n")
    assert names_in(bad) == {"FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOP"}
    assert names_in(bad) - names()


def test_there_are_workflows() -> None:
    # The parametrized checks above have something to check.
    assert {p.name for p in workflow_files()} >= {"ci.yml", "runtime-release.yml"}
