"""How the devstack runs a command to completion: through the process adapter, failures as typed errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from release.adapters import process
from release.adapters.process import tail
from release.errors import OperationError

__all__ = ["run", "tail"]


def run(
    cmd: Sequence[str | Path],
    *,
    step: str,
    hint: str,
    error: type[OperationError] = OperationError,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900.0,
) -> str:
    """Run a command to completion and return its stdout; raise `error` naming the step, the cause and a fix."""
    try:
        return process.run(cmd, env=env, cwd=cwd, timeout=timeout, what=step, hint=hint).stdout
    except process.ProcessError as err:
        if isinstance(err, error):
            raise
        raise error(str(err)) from None
