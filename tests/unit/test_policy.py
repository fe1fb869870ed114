"""`topology check`: passes on this repository, finds planted addresses and retired practices."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from release.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _copy_repo(tmp_path: Path) -> Path:
    dest = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _check(root: Path) -> Result:
    return CliRunner().invoke(
        main, ["--topology", str(root / "ops/topology/fractalops.yaml"), "topology", "check", "--root", str(root)]
    )


def test_policy_check_passes_on_this_repository() -> None:
    # The repository's own code, scripts and workflows bake no cache address.
    result = _check(ROOT)
    assert result.exit_code == 0, result.output


PLANTED = [
    ("release/leak.py", 'CACHE = "nexus.nexus.svc:8082/fractalops/buildcache"\n', "the Nexus service host"),
    ("ops/containers/fractalops/extra.sh", "#!/bin/sh\ncurl http://10.43.120.83/\n", "the Nexus ClusterIP"),
    ("ops/upper.sh", "#!/bin/sh\nMIRROR=http://NEXUS.NEXUS.SVC.cluster.local\n", "the Nexus service host"),
    ("release/short.py", 'HOST = "nexus.nexus"\n', "the Nexus service host"),
    (".github/workflows/x.yml", "env:\n  MIRROR: http://127.0.0.1:30083\n", "NodePort 30083"),
    ("ops/scripts/pull.sh", "#!/bin/sh\nport=8083\n", "docker-group port 8083"),
    ("release/old.py", "HOST = '10.10.10.150'\n", "retired standalone cache"),
    ("release/builder.py", 'ENDPOINT = "tcp://buildkit.fractalops.svc:9999"\n', "the shared BuildKit's host"),
    ("ops/scripts/buildx.sh", "#!/bin/sh\nBUILDKIT_PORT=1234\n", "the shared BuildKit's port 1234"),
    ("ops/systemd/registry-gc.timer", "[Timer]\nOnCalendar=daily\n", "registry-gc.timer"),
    ("ops/devspace.yaml", "version: v2\nsync: []\n", "DevSpace"),
]


@pytest.mark.parametrize(("relative", "content", "why"), PLANTED, ids=[p[0] for p in PLANTED])
def test_policy_check_finds_a_planted_address(tmp_path: Path, relative: str, content: str, why: str) -> None:
    # A planted address or retired practice is reported as file:line and exits 1.
    root = _copy_repo(tmp_path)
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    result = _check(root)
    assert result.exit_code == 1, result.output
    assert f"{relative}:" in result.stdout
    assert why in result.stdout


def test_policy_check_ignores_topology_files(tmp_path: Path) -> None:
    # A second topology file (e.g. a staging one) may name addresses.
    root = _copy_repo(tmp_path)
    shutil.copy(root / "ops/topology/fractalops.yaml", root / "ops/topology/staging.yaml")
    assert _check(root).exit_code == 0
