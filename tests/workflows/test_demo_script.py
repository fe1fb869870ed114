"""ops/dev/demo.sh stops at a failed step instead of going on without a stack."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_stops_when_devstack_up_fails(tmp_path: Path) -> None:
    # A failed `devstack up` (here: a port base out of range, exit 2) ends demo.sh with that error, before any release.
    env = {
        **os.environ,
        "FRACTALOPS_DEVSTACK_DIR": str(tmp_path / "state"),
        "FRACTALOPS_DEVSTACK_PORT_BASE": "1",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "ops" / "dev" / "demo.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "port base 1 is outside" in result.stderr
    assert "smoke release through the stack" not in result.stderr
    assert "Cannot connect to the Docker daemon" not in result.stderr
    assert result.stdout == ""
