"""The one place the devstack runs external commands; failures become the project's typed errors."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from release.errors import OperationError

_TAIL_LINES = 15


def tail(text: str, lines: int = _TAIL_LINES) -> str:
    """Return the last lines of a command's output, for error messages."""
    return "\n".join(text.strip().splitlines()[-lines:])


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
    """Run a command to completion and return its stdout; raise `error` naming the step and a fix."""
    argv = [str(part) for part in cmd]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            argv,
            env=full_env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        raise error(f"{step}: {argv[0]} not found. {hint}") from err
    except subprocess.TimeoutExpired as err:
        raise error(f"{step}: `{' '.join(argv)}` took longer than {timeout:.0f} s. {hint}") from err
    if proc.returncode != 0:
        detail = tail(proc.stderr or proc.stdout)
        raise error(f"{step} failed (exit {proc.returncode}): `{' '.join(argv)}`\n{detail}\nWhat to do: {hint}")
    return proc.stdout
