"""Helpers of the workflow checks: where things are, the lint tools, the parsed workflows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT_CONFIG = REPO / ".github" / "actionlint.yaml"
RELEASE_WORKFLOW = WORKFLOWS / "runtime-release.yml"
RELEASE_SH = "./ops/containers/fractalops/release.sh"
SHEBANG = re.compile(r"^#!\s*\S*\b(?:env\s+)?(?:ba|da|k)?sh\b")
INSTALL_HINT = "install the dev tools: .venv/bin/pip install -e '.[dev]' (or run ./ops/dev/test.sh)"


def workflow_files() -> list[Path]:
    """Every workflow file of the repository."""
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def shell_scripts(root: Path) -> list[Path]:
    """Every `*.sh` file and every file with a sh/bash shebang under `root`."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or "node_modules" in path.parts:
            continue
        if path.suffix == ".sh":
            found.append(path)
            continue
        try:
            with path.open("rb") as handle:
                first = handle.readline(200)
        except OSError:
            continue
        if first.startswith(b"#!") and SHEBANG.match(first.decode("utf-8", "replace")):
            found.append(path)
    return found


def load_yaml(path: Path) -> Any:
    """A workflow parsed as YAML 1.2 (so `on:` stays the string "on")."""
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def iter_steps(workflow: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(job id, step) for every step of every job."""
    for job_id, job in (workflow.get("jobs") or {}).items():
        for step in job.get("steps") or []:
            yield job_id, step


def tool_path(name: str) -> str:
    """A tool from this virtualenv (next to the running Python) or PATH; fail with the install hint."""
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which(name, path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return found


def lint_env() -> dict[str, str]:
    """The environment for the linters: this venv first on PATH, no GitHub token (zizmor stays offline)."""
    env = {k: v for k, v in os.environ.items() if k not in {"GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN"}}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["NO_COLOR"] = "1"
    return env


def run_tool(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a lint tool; the caller asserts on its exit code and output."""
    return subprocess.run(
        [tool_path(name), *args], cwd=cwd, env=lint_env(), capture_output=True, text=True, timeout=300, check=False
    )


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    """actionlint with the repository's config, this venv's shellcheck on `run:` scripts, no pyflakes."""
    return run_tool(
        "actionlint",
        "-no-color",
        "-oneline",
        "-config-file",
        str(ACTIONLINT_CONFIG),
        "-shellcheck",
        tool_path("shellcheck"),
        "-pyflakes",
        "",
        *map(str, files),
    )


def zizmor(*files: Path) -> subprocess.CompletedProcess[str]:
    """zizmor offline (no GitHub API), plain output."""
    return run_tool("zizmor", "--offline", "--no-progress", "--format", "plain", *map(str, files))


def shellcheck(*files: Path) -> subprocess.CompletedProcess[str]:
    """shellcheck following `source`d files, every severity."""
    return run_tool("shellcheck", "--external-sources", "--severity", "style", *map(str, files))
