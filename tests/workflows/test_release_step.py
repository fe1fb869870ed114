"""The workflow's smoke release, run locally as GitHub would run it, against the local build stack."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from workflow_tools import RELEASE_SH, RELEASE_WORKFLOW, REPO, load_yaml

from release.adapters.registry import RegistryClient
from release.imageref import parse_pinned_ref
from release.topology.load import load_topology

if TYPE_CHECKING:
    from conftest import Devstack

EXPRESSION = re.compile(r"\$\{\{\s*(?P<expr>.*?)\s*\}\}")
# Steps a local run leaves out: the toolkit is already installed editable in .venv (a fresh `pip install .`
# would replace it), and the `uses:` steps are the runner's job (the stack's builder, anonymous registries).
SKIPPED_RUN = ("python -m venv",)


def evaluate(value: Any, context: dict[str, str]) -> str:
    """Replace each `${{ expr }}` by its value in `context`; an expression the test does not know fails it."""
    text = str(value)

    def one(match: re.Match[str]) -> str:
        expr = match["expr"]
        if expr not in context:
            pytest.fail(f"the workflow uses {expr!r}: teach test_release_step.py its local value")
        return context[expr]

    return EXPRESSION.sub(one, text)


def read_github_file(path: Path) -> dict[str, str]:
    """A $GITHUB_OUTPUT / $GITHUB_ENV file: `name=value` lines and `name<<DELIM` blocks."""
    values: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    index = 0
    while index < len(lines):
        line = lines[index]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, index + 1)
            values[name] = "\n".join(lines[index + 1 : end])
            index = end + 1
            continue
        if line:
            name, _, value = line.partition("=")
            values[name] = value
        index += 1
    return values


def current_builder(stack: Devstack) -> str:
    """The stack's current buildx builder (what setup-buildx-action's `name` output is in CI)."""
    result = stack.docker(["buildx", "inspect"])
    assert result.returncode == 0, result.stderr
    match = re.search(r"^Name:\s+(\S+)", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match[1]


def run_job_until_release(
    stack: Devstack, tmp_path: Path, job: str
) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """Run the `run:` steps of `job` up to its `release` step as the runner would; return outputs, summary, result."""
    workflow = load_yaml(RELEASE_WORKFLOW)
    steps = workflow["jobs"][job]["steps"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    context = {
        "github.sha": head.stdout.strip(),
        "github.ref_name": "main",
        "steps.buildx.outputs.name": current_builder(stack),
    }
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FRACTALOPS_", "GITHUB_"))}
    base.update(stack.env)
    base.update(
        {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_SHA": context["github.sha"],
            "GITHUB_REF_NAME": "main",
            "GITHUB_ENV": str(tmp_path / "github_env"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
            "RUNNER_TEMP": str(runner_temp),
            # The stack's topology, where CI uses the committed one; events stay in the test's folder.
            "FRACTALOPS_TOPOLOGY": str(stack.topology),
            "FRACTALOPS_BUILD_EVENTS_FILE": str(tmp_path / "events.jsonl"),
        }
    )
    job_env = {k: evaluate(v, context) for k, v in (workflow["jobs"][job].get("env") or {}).items()}
    for index, step in enumerate(steps):
        if "run" not in step or any(marker in step["run"] for marker in SKIPPED_RUN):
            continue
        env = {**base, **read_github_file(tmp_path / "github_env"), **job_env}
        env.update({k: evaluate(v, context) for k, v in (step.get("env") or {}).items()})
        outputs = tmp_path / f"output-{index}"
        env["GITHUB_OUTPUT"] = str(outputs)
        script = tmp_path / f"step-{index}.sh"
        script.write_text(step["run"], encoding="utf-8")
        # GitHub's default shell on Linux: `bash -e {0}`, in the workspace.
        result = subprocess.run(
            ["bash", "-e", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        if step.get("id") == "release":
            return outputs, tmp_path / "step_summary.md", result
        assert result.returncode == 0, f"step {step.get('name')!r} failed:\n{result.stdout}\n{result.stderr}"
    pytest.fail(f"job {job} has no step with id 'release'")


@pytest.mark.devstack
@pytest.mark.slow
def test_smoke_release_step_publishes_image_refs(devstack: Devstack, tmp_path: Path) -> None:
    # The smoke job's release step, run as in CI, writes both image refs as outputs and a summary table.
    step = next(s for s in load_yaml(RELEASE_WORKFLOW)["jobs"]["smoke"]["steps"] if s.get("id") == "release")
    assert step["run"].strip() == RELEASE_SH
    assert step["env"]["FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS"] == "0"

    outputs_file, summary_file, result = run_job_until_release(devstack, tmp_path, "smoke")
    assert result.returncode == 0, f"release step failed:\n{result.stdout}\n{result.stderr}"

    topology = load_topology(devstack.topology)
    outputs = read_github_file(outputs_file)
    for target in ("api", "worker"):
        ref = outputs.get(f"image_ref_{target}", "")
        repository = topology.image_repository(f"fractalops-{target}")
        assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", ref), outputs
        pinned = parse_pinned_ref(ref)
        assert RegistryClient.for_topology(topology, pinned.registry).manifest_digest(pinned) == pinned.digest
        assert f"image_ref={ref}" in result.stdout.splitlines()

    summary = summary_file.read_text(encoding="utf-8")
    table = [line for line in summary.splitlines() if line.startswith("|")]
    assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", table[1]), summary
    assert len(table) == 4, summary  # header, separator, api, worker
    for target in ("api", "worker"):
        assert any(line.startswith(f"| {target} |") and outputs[f"image_ref_{target}"] in line for line in table), (
            summary
        )


def test_github_file_reader_handles_heredocs(tmp_path: Path) -> None:
    # The $GITHUB_OUTPUT/$GITHUB_ENV reader this test relies on understands both line forms.
    path = tmp_path / "f"
    path.write_text("a=1\nb<<EOF_x\nline 1\nline=2\nEOF_x\nc=x=y\n")
    assert read_github_file(path) == {"a": "1", "b": "line 1\nline=2", "c": "x=y"}
