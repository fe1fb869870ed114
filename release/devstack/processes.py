"""Start and stop the stack's background processes, tracked by pidfiles in the state dir."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from release.adapters import process
from release.devstack.paths import StackPaths
from release.errors import OperationError


@dataclass(frozen=True)
class TrackedProcess:
    """A process recorded in a pidfile: pid and kernel start time (guards against pid reuse)."""

    pid: int
    start_time: str


def proc_start_time(pid: int) -> str | None:
    """Return the kernel start time of a live (non-zombie) process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def reap(pid: int) -> None:
    """Collect a child's exit status if this process is its parent (avoids zombies in tests)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def read_pidfile(path: Path) -> TrackedProcess | None:
    """Return the process of a pidfile if it still runs, else None."""
    try:
        pid_text, _, start = path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    reap(pid)
    current = proc_start_time(pid)
    if current is None or (start and current != start):
        return None
    return TrackedProcess(pid=pid, start_time=current)


def running(paths: StackPaths, name: str) -> TrackedProcess | None:
    """Return the running process of a component, or None."""
    return read_pidfile(paths.pidfile(name))


def start(
    paths: StackPaths, name: str, argv: Sequence[str | Path], env: Mapping[str, str] | None = None
) -> TrackedProcess:
    """Start a component detached from the terminal, logging to its log file, and record its pidfile."""
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = paths.logfile(name)
    with log_path.open("ab") as log:
        log.write(f"\n--- devstack start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {argv}\n".encode())
        log.flush()
        try:
            proc = process.start(argv, env=env, stdout=log, stderr=subprocess.STDOUT, what=f"starting {name}")
        except process.ProcessError as err:
            raise OperationError(f"{err}. What to do: run `devstack up` again to reinstall.") from None
    start_time = proc_start_time(proc.pid) or ""
    paths.pidfile(name).write_text(f"{proc.pid} {start_time}\n")
    return TrackedProcess(pid=proc.pid, start_time=start_time)


def exited_early(paths: StackPaths, name: str) -> bool:
    """Return True if a component was started (pidfile present) but no longer runs."""
    return paths.pidfile(name).exists() and running(paths, name) is None


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until the processes are gone; return the pids still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        for pid in alive:
            reap(pid)
        alive = [pid for pid in alive if proc_start_time(pid) is not None]
        if alive:
            time.sleep(0.05)
    return alive


def terminate(pids: Sequence[int], timeout: float = 15.0) -> list[int]:
    """Send SIGTERM, wait, then SIGKILL what remains; return the pids that survived even that."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    left = wait_gone(pids, timeout)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return wait_gone(left, 5.0)


def stop(paths: StackPaths, name: str, timeout: float = 15.0) -> int | None:
    """Stop a component by its pidfile, wait for it, remove the pidfile; return the pid it had."""
    tracked = running(paths, name)
    pidfile = paths.pidfile(name)
    if tracked is None:
        pidfile.unlink(missing_ok=True)
        return None
    if not process.stop_group(tracked.pid, timeout):
        raise OperationError(
            f"stopping {name} (pid {tracked.pid}): still running after SIGKILL. "
            f"What to do: check `ps -p {tracked.pid}` and stop it by hand."
        )
    pidfile.unlink(missing_ok=True)
    return tracked.pid


def pids_mentioning(needle: str) -> list[int]:
    """Return live pids whose command line mentions `needle` (e.g. the stack's containerd socket)."""
    found: list[int] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and proc_start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found
