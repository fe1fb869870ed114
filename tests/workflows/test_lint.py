"""actionlint and zizmor on every workflow, shellcheck on every shell script in ops/; and proof each can fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_tools import (
    RELEASE_WORKFLOW,
    actionlint,
    iter_steps,
    load_yaml,
    shell_scripts,
    shellcheck,
    zizmor,
)

EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def run_scripts(workflow: Path, folder: Path) -> list[Path]:
    """Each `run:` of a workflow as a bash file (expressions replaced by a word), the way actionlint checks them."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = []
    for index, (job_id, step) in enumerate(iter_steps(load_yaml(workflow))):
        if "run" not in step:
            continue
        body = EXPRESSION.sub("GHA_EXPRESSION", step["run"])
        script = folder / f"{workflow.stem}-{job_id}-{index}.sh"
        # GitHub runs `run:` with `bash -e {0}` on Linux.
        script.write_text(f"#!/usr/bin/env bash\nset -e\n{body}", encoding="utf-8")
        scripts.append(script)
    return scripts


def broken_release_workflow(folder: Path) -> Path:
    """A copy of runtime-release.yml with one mistake for each tool."""
    text = RELEASE_WORKFLOW.read_text(encoding="utf-8")
    good_run = "        run: ./ops/containers/fractalops/release.sh\n"
    bad_run = (
        "        run: |\n"
        '          echo "promoting ${{ inputs.api_image_ref }}"\n'  # zizmor: template injection
        "          ./ops/containers/fractalops/release.sh promote api=$API_IMAGE_REF\n"  # shellcheck: SC2086
    )
    assert good_run in text, "the smoke release step changed: update this test's mutation"
    text = text.replace(good_run, bad_run, 1)
    good_ref = "${{ steps.buildx.outputs.name }}"
    assert good_ref in text
    text = text.replace(good_ref, "${{ steps.buildxx.outputs.name }}", 1)  # actionlint: unknown step
    target = folder / ".github" / "workflows" / "runtime-release.yml"
    target.parent.mkdir(parents=True)
    target.write_text(text, encoding="utf-8")
    return target


def test_actionlint_clean(workflow: Path) -> None:
    # Every workflow passes actionlint, which also runs shellcheck on its `run:` scripts.
    result = actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_clean(workflow: Path) -> None:
    # Every workflow passes zizmor (offline audits, regular persona).
    result = zizmor(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_run_scripts_pass_shellcheck(workflow: Path, tmp_path: Path) -> None:
    # Every `run:` script of every workflow passes shellcheck on its own.
    scripts = run_scripts(workflow, tmp_path)
    if not scripts:
        pytest.skip(f"{workflow.name} has no run: steps")
    result = shellcheck(*scripts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ops_script_passes_shellcheck(ops_script: Path) -> None:
    # Every shell script in ops/ (by suffix or shebang) passes shellcheck.
    result = shellcheck(ops_script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_workflow_fails_actionlint(tmp_path: Path) -> None:
    # actionlint can fail: it reports the unknown step and, through shellcheck, the unquoted variable.
    result = actionlint(broken_release_workflow(tmp_path))
    assert result.returncode != 0
    assert "buildxx" in result.stdout
    assert "SC2086" in result.stdout


def test_broken_workflow_fails_zizmor(tmp_path: Path) -> None:
    # zizmor can fail: an input expanded inside `run:` is a template injection.
    result = zizmor(broken_release_workflow(tmp_path))
    assert result.returncode != 0
    assert "template-injection" in result.stdout + result.stderr


def test_broken_workflow_fails_shellcheck(tmp_path: Path) -> None:
    # shellcheck can fail: the broken copy's release script leaves a variable unquoted.
    workflow = broken_release_workflow(tmp_path / "repo")
    result = shellcheck(*run_scripts(workflow, tmp_path / "scripts"))
    assert result.returncode != 0
    assert "SC2086" in result.stdout


def test_shell_scripts_are_found_by_suffix_and_shebang(tmp_path: Path) -> None:
    # The ops/ scan finds *.sh files and sh/bash shebang files, and nothing else.
    files = {
        "a.sh": "echo a\n",
        "bin/b": "#!/usr/bin/env bash\necho b\n",
        "c": "#!/bin/sh\necho c\n",
        "d": "#!/usr/bin/env python3\nprint('d')\n",
        "e.txt": "echo e\n",
        "f.py": "print('f')\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = [p.relative_to(tmp_path).as_posix() for p in shell_scripts(tmp_path)]
    assert found == ["a.sh", "bin/b", "c"]


def test_broken_ops_script_fails_shellcheck(tmp_path: Path) -> None:
    # shellcheck on an ops-style script can fail (unquoted variable, cd without a guard).
    script = tmp_path / "ops" / "bad"
    script.parent.mkdir()
    script.write_text('#!/usr/bin/env bash\ncd $1\nrm -rf "$HOME"/x\n')
    assert shell_scripts(tmp_path / "ops") == [script]
    result = shellcheck(script)
    assert result.returncode != 0
    assert "SC2086" in result.stdout
