"""The one place the toolkit starts processes: run to completion, start in the background, stop a process group."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from release.errors import OperationError

TAIL_LINES = 15
# Values that must never reach a message: `--password x`, `password=x`, `user:secret@host`.
_SECRET_ARG = re.compile(r"(?i)--?(password|token|secret)(=.*)?", re.DOTALL)
_SECRET_ASSIGNMENT = re.compile(r"(?i)\b(password|passwd|token|secret|auth)=([^\s,]+)")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last non-empty lines of a command's output, for error messages."""
    return "\n".join([line for line in text.strip().splitlines() if line.strip()][-lines:])


def masked(argv: Sequence[str]) -> list[str]:
    """The command line with passwords, tokens and URL credentials replaced by ***."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append("***")
            hide_next = False
            continue
        match = _SECRET_ARG.fullmatch(arg)
        if match:
            shown.append(f"--{match.group(1)}=***" if match.group(2) else arg)
            hide_next = match.group(2) is None
            continue
        arg = _URL_CREDENTIALS.sub(r"\1***@", arg)
        shown.append(_SECRET_ASSIGNMENT.sub(r"\1=***", arg))
    return shown


class ProcessError(OperationError):
    """A command failed: its (masked) command line, exit code and the tail of its error output."""

    def __init__(
        self, argv: Sequence[str], returncode: int | None, stderr: str, *, what: str = "", hint: str = ""
    ) -> None:
        """Keep the facts; the message is one sentence plus the output's tail."""
        self.argv = masked(argv)
        self.returncode = returncode
        self.stderr_tail = tail(stderr)
        self.what = what or f"`{' '.join(self.argv)}`"
        status = "could not start" if returncode is None else f"failed (exit {returncode})"
        message = f"{self.what} {status}"
        if self.stderr_tail:
            message += f": {self.stderr_tail.splitlines()[-1]}"
        if hint:
            message += f". What to do: {hint}"
        super().__init__(message)


@dataclass(frozen=True)
class Completed:
    """A finished command: exit code and output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _environment(env: Mapping[str, str] | None, replace_env: bool) -> dict[str, str]:
    """The child's environment: ours plus `env`, or exactly `env` when `replace_env`."""
    if replace_env:
        return dict(env or {})
    return {**os.environ, **(env or {})}


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    replace_env: bool = False,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float | None = 900.0,
    check: bool = True,
    what: str = "",
    hint: str = "",
    error: type[ProcessError] = ProcessError,
) -> Completed:
    """Run a command to completion; with `check`, a non-zero exit raises `error` (command, code, stderr tail)."""
    args = [str(part) for part in argv]
    try:
        proc = subprocess.run(
            args,
            env=_environment(env, replace_env),
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise error(args, None, f"{args[0]}: not found", what=what, hint=hint) from None
    except subprocess.TimeoutExpired as err:
        raise error(args, None, f"still running after {timeout:g} s", what=what, hint=hint) from err
    if check and proc.returncode != 0:
        raise error(args, proc.returncode, proc.stderr or proc.stdout, what=what, hint=hint)
    return Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def start(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    replace_env: bool = False,
    cwd: Path | None = None,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    stderr: int | IO[bytes] | None = subprocess.PIPE,
    what: str = "",
    hint: str = "",
) -> subprocess.Popen[bytes]:
    """Start a command in a process group of its own (so `stop_group` ends it and all it spawned)."""
    args = [str(part) for part in argv]
    try:
        return subprocess.Popen(
            args,
            env=_environment(env, replace_env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as err:
        raise ProcessError(args, None, f"{args[0]}: {err.strerror or err}", what=what, hint=hint) from None


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _reap(pid: int) -> None:
    """Collect a child's exit status if this process is its parent."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _group_members(group: int) -> list[int]:
    """Live pids whose process group is `group`."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def stop_group(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM the process group led by `pid`, SIGKILL what is left after `timeout`; return whether all are gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not _group_members(pid):
                return True
            time.sleep(0.05)
    _reap(pid)
    return not _group_members(pid)


def replace(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None, replace_env: bool = False) -> NoReturn:
    """Replace this process with a command: its exit code, signals and terminal become the command's own."""
    args = [str(part) for part in argv]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execvpe(args[0], args, _environment(env, replace_env))  # noqa: S606 (exec replaces this process: no shell)
    except OSError as err:
        raise ProcessError(args, None, f"{args[0]}: {err.strerror or err}") from None
