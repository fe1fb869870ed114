"""The workflows keep their contract: pinned actions, least privilege, inputs via env, release.sh only."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from workflow_tools import RELEASE_SH, RELEASE_WORKFLOW, REPO, iter_steps, load_yaml

from release.topology.load import load_topology
from release.topology.policy import scan

USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+#\s+v\d+\.\d+\.\d+\s*$")


@pytest.fixture(scope="module")
def release() -> Any:
    return load_yaml(RELEASE_WORKFLOW)


def step_named(workflow: Any, job: str, prefix: str) -> dict[str, Any]:
    """The one step of `job` whose name starts with `prefix`."""
    found = [s for j, s in iter_steps(workflow) if j == job and str(s.get("name", "")).startswith(prefix)]
    assert len(found) == 1, f"{job}: expected one step named {prefix!r}, found {len(found)}"
    return found[0]


def test_actions_pinned_by_sha_with_version_comment(workflow: Path) -> None:
    # Every action is pinned by a full commit SHA and says its release in a `# vX.Y.Z` comment.
    for number, line in enumerate(workflow.read_text().splitlines(), start=1):
        match = USES.match(line)
        if not match or match["ref"].startswith("./"):
            continue
        assert PINNED.match(match["ref"]), f"{workflow.name}:{number}: not pinned by SHA: {match['ref']}"
        assert VERSION_COMMENT.match(match["rest"]), f"{workflow.name}:{number}: no '# vX.Y.Z' comment"


def test_no_expressions_in_run_scripts(workflow: Path) -> None:
    # Inputs, secrets and contexts reach `run:` only through `env:`, never as `${{ }}` in the script.
    for job, step in iter_steps(load_yaml(workflow)):
        assert "${{" not in step.get("run", ""), f"{workflow.name}: {job}: {step.get('name')}: expression in run:"


def test_least_privilege(workflow: Path) -> None:
    # Top-level permissions grant at most contents: read; each job grants only what it needs.
    data = load_yaml(workflow)
    assert data.get("permissions") in ({}, {"contents": "read"}), "top-level permissions must be {} or contents: read"
    for job_id, job in data["jobs"].items():
        permissions = job.get("permissions", data["permissions"])
        assert permissions != "write-all"
        if permissions.get("contents") == "write":
            assert (workflow.name, job_id) == ("runtime-release.yml", "promote"), f"{job_id}: contents: write"


def test_checkouts_do_not_persist_credentials(workflow: Path) -> None:
    # No checkout leaves a token in .git/config (the promote push gets its token through env instead).
    for job, step in iter_steps(load_yaml(workflow)):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert (step.get("with") or {}).get("persist-credentials") is False, f"{workflow.name}: {job}"


def test_no_cache_address_in_workflows(tmp_path: Path) -> None:
    # The policy check finds no Nexus host, ClusterIP, port or retired cache in .github/.
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    findings = scan(tmp_path, load_topology(REPO / "ops" / "topology" / "fractalops.yaml"))
    assert not findings, "\n".join(f.render(tmp_path) for f in findings)


def test_triggers_and_inputs(release: Any) -> None:
    # Push to main (not for GitOps-only commits), or a manual smoke/promote with optional image refs.
    on = release["on"]
    assert on["push"]["branches"] == ["main"]
    assert "platform/k8s/apps/**" in on["push"]["paths-ignore"]
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["mode"]["type"] == "choice"
    assert inputs["mode"]["options"] == ["smoke", "promote"]
    for name in ("api_image_ref", "worker_image_ref"):
        assert inputs[name]["type"] == "string"
        assert inputs[name]["required"] is False


def test_release_jobs_run_on_self_hosted_runners(release: Any) -> None:
    # Both release jobs run on the in-cluster self-hosted runners that reach the Nexus connectors.
    for job in ("smoke", "promote"):
        assert release["jobs"][job]["runs-on"][:1] == ["self-hosted"]


def test_promotions_never_overlap(release: Any) -> None:
    # One promotion at a time, none cancelled; the group does not depend on the run or the ref.
    concurrency = release["jobs"]["promote"]["concurrency"]
    assert concurrency["cancel-in-progress"] is False
    assert "${{" not in concurrency["group"]
    assert release["jobs"]["promote"]["permissions"]["contents"] == "write"
    assert release["jobs"]["smoke"]["permissions"]["contents"] == "read"


def test_smoke_release_step(release: Any) -> None:
    # The smoke job runs release.sh with the GitOps switch at 0 and publishes both image refs.
    step = step_named(release, "smoke", "Release")
    assert step["id"] == "release"
    assert step["run"].strip() == RELEASE_SH
    assert step["env"]["FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS"] == "0"
    outputs = release["jobs"]["smoke"]["outputs"]
    assert outputs == {
        "image_ref_api": "${{ steps.release.outputs.image_ref_api }}",
        "image_ref_worker": "${{ steps.release.outputs.image_ref_worker }}",
    }


def test_promote_steps(release: Any) -> None:
    # The promote job builds with the switch at 1, or promotes the given refs without a build.
    build = step_named(release, "promote", "Release")
    assert build["env"]["FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS"] == "1"
    assert build["run"].strip().splitlines()[-1] == RELEASE_SH
    only = step_named(release, "promote", "Promote already-built")
    assert (
        only["run"].strip().splitlines()[-1] == f'{RELEASE_SH} promote "api=$API_IMAGE_REF" "worker=$WORKER_IMAGE_REF"'
    )
    env = release["jobs"]["promote"]["env"]
    assert env == {
        "FRACTALOPS_NEXUS_VIA": "clusterip",
        "API_IMAGE_REF": "${{ inputs.api_image_ref }}",
        "WORKER_IMAGE_REF": "${{ inputs.worker_image_ref }}",
    }


@pytest.mark.parametrize("job", ["smoke", "promote"])
def test_builder_config_comes_from_the_toolkit(release: Any, job: str) -> None:
    # buildkitd.toml is rendered by the toolkit before setup-buildx-action reads it; no TOML in the workflow.
    steps = [s for j, s in iter_steps(release) if j == job]
    render = next(i for i, s in enumerate(steps) if "topology render-buildkitd" in s.get("run", ""))
    assert '--output "$RUNNER_TEMP/buildkitd.toml"' in steps[render]["run"]
    # One way to reach Nexus for render-env, render-buildkitd and the driver: the job's FRACTALOPS_NEXUS_VIA.
    assert release["jobs"][job]["env"]["FRACTALOPS_NEXUS_VIA"] == "clusterip"
    setup = next(i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("docker/setup-buildx-action@"))
    assert render < setup
    assert steps[setup]["with"] == {
        "buildkitd-config": "${{ runner.temp }}/buildkitd.toml",
        "driver-opts": "image=${{ steps.cache.outputs.group }}/moby/buildkit:buildx-stable-1",
    }
    assert "[registry." not in RELEASE_WORKFLOW.read_text()


@pytest.mark.parametrize("job", ["smoke", "promote"])
def test_the_buildkit_image_comes_from_the_docker_group_after_logging_in_to_it(release: Any, job: str) -> None:
    # An engine sends a registry mirror no credentials, so setup-buildx-action's docker-container builder pulls
    # moby/buildkit from the docker-group by name, logged in first; the group's host is the rendered mirror's.
    steps = [s for j, s in iter_steps(release) if j == job]
    find = next(i for i, s in enumerate(steps) if s.get("id") == "cache")
    assert 'echo "group=${FRACTALOPS_DOCKER_IO_MIRROR_ENDPOINT#*://}"' in steps[find]["run"]
    login = next(
        i
        for i, s in enumerate(steps)
        if str(s.get("uses", "")).startswith("docker/login-action@")
        and s["with"]["registry"] == "${{ steps.cache.outputs.group }}"
    )
    setup = next(i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("docker/setup-buildx-action@"))
    assert find < login < setup


def test_only_release_sh_does_release_work(release: Any) -> None:
    # Besides setup (venv, render-env, render-buildkitd, the cache host), run: steps only call release.sh.
    allowed_setup = (
        "python -m venv",
        "topology render-env",
        "topology render-buildkitd",
        "FRACTALOPS_BUILDCACHE_REF%%/*",
    )
    for job, step in iter_steps(release):
        run = step.get("run")
        if run is None or any(marker in run for marker in allowed_setup) or step.get("id") == "plan":
            continue
        assert RELEASE_SH in run, f"{job}: {step.get('name')}: release work outside release.sh"
        commands = [line.split()[0] for line in run.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert not {"docker", "git", "python", "crane", "skopeo"} & set(commands), f"{job}: {commands}"


def test_registry_logins_use_secrets_and_rendered_hosts(release: Any) -> None:
    # Logins take credentials from secrets and the registry host from the rendered env, never a literal.
    for job in ("smoke", "promote"):
        logins = [
            s for j, s in iter_steps(release) if j == job and str(s.get("uses", "")).startswith("docker/login-action@")
        ]
        registries = {s["with"]["registry"] for s in logins}
        assert registries == {
            "${{ env.FRACTALOPS_IMAGE_REGISTRY }}",
            "${{ steps.cache.outputs.registry }}",
            "${{ steps.cache.outputs.group }}",
        }
        for login in logins:
            assert login["with"]["password"].startswith(("${{ secrets.", "${{ github.token"))


@pytest.mark.parametrize("job", ["smoke", "promote"])
def test_release_checkouts_fetch_the_history_the_monotonic_guard_reads(release: Any, job: str) -> None:
    # The promotion (or its preview in a smoke build) compares source commits by ancestry: a depth-1 checkout
    # lacks the pinned commit, so both release jobs fetch the whole history.
    checkout = step_named(release, job, "Check out")
    assert str(checkout["uses"]).startswith("actions/checkout@")
    assert checkout["with"].get("fetch-depth") == 0
