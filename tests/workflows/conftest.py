"""Parametrization of the workflow checks (the helpers live in workflow_tools.py)."""

from __future__ import annotations

import pytest
from workflow_tools import REPO, shell_scripts, workflow_files


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `workflow` over the workflow files and `ops_script` over the shell scripts in ops/."""
    if "workflow" in metafunc.fixturenames:
        files = workflow_files()
        metafunc.parametrize("workflow", files, ids=[p.name for p in files])
    if "ops_script" in metafunc.fixturenames:
        scripts = shell_scripts(REPO / "ops")
        metafunc.parametrize("ops_script", scripts, ids=[str(p.relative_to(REPO)) for p in scripts])
