"""The process adapter: typed errors with command, exit code and stderr tail; masking; process-group stop."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from release.adapters import process
from release.adapters.process import ProcessError, masked


def test_a_failing_command_raises_with_its_command_exit_code_and_last_error_line() -> None:
    # The error carries the command, the exit code and the stderr tail; the message is one line.
    with pytest.raises(ProcessError) as caught:
        process.run(["sh", "-c", "echo first >&2; echo 'the cause' >&2; exit 3"], what="doing a thing", hint="fix it")
    err = caught.value
    assert err.returncode == 3
    assert err.argv[0] == "sh"
    assert err.stderr_tail == "first\nthe cause"
    assert str(err) == "doing a thing failed (exit 3): the cause. What to do: fix it"
    assert "\n" not in str(err)


def test_a_missing_program_is_a_process_error_not_a_traceback() -> None:
    # A program that does not exist raises ProcessError with no exit code.
    with pytest.raises(ProcessError, match="could not start: no-such-program-here: not found") as caught:
        process.run(["no-such-program-here"])
    assert caught.value.returncode is None


def test_check_false_returns_the_exit_code_and_output() -> None:
    # check=False never raises for a non-zero exit.
    done = process.run(["sh", "-c", "echo out; exit 4"], check=False)
    assert (done.returncode, done.stdout) == (4, "out\n")


def test_passwords_tokens_and_url_credentials_are_masked_in_the_command_line() -> None:
    # Secrets given as flags, assignments or URL credentials never appear in an error.
    argv = ["docker", "login", "--password", "hunter2", "--token=abc", "auth=Zm9v", "https://u:p@host/x"]
    assert masked(argv) == ["docker", "login", "--password", "***", "--token=***", "auth=***", "https://***@host/x"]
    with pytest.raises(ProcessError) as caught:
        process.run(["sh", "-c", "exit 1", "--password", "hunter2"])
    assert "hunter2" not in str(caught.value) and "hunter2" not in " ".join(caught.value.argv)


def test_stop_group_ends_the_process_and_everything_it_spawned(tmp_path: Path) -> None:
    # A started command runs in a group of its own; stopping it also stops its children, even ones ignoring SIGTERM.
    pids = tmp_path / "pids"
    proc = process.start(
        ["sh", "-c", f"sleep 300 & echo $! >> {pids}; (trap '' TERM; sleep 300) & echo $! >> {pids}; wait"],
        stdout=None,
        stderr=None,
    )
    deadline = time.monotonic() + 5
    while (not pids.exists() or len(pids.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.02)
    children = [int(p) for p in pids.read_text().split()]
    assert os.getpgid(children[0]) == proc.pid
    assert process.stop_group(proc.pid, timeout=1.0)
    proc.wait(timeout=5)
    assert not [pid for pid in children if process.alive(pid)]
