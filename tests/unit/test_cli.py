"""The console script as a person runs it: one-line errors with the documented exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("fractalops-release")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env={**os.environ, **env}, check=False)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["nosuch"], {}, "No such command 'nosuch'"),
        (["runtime", "--dry-run", "--target", "api"], {"FRACTALOPS_PROGRESS": "x"}, "'x' is not one of"),
        (["runtime", "--dry-run"], {"FRACTALOPS_PROGRESS": "x"}, "'FRACTALOPS_PROGRESS' (the environment variable"),
        (["runtime", "--dry-run"], {"FRACTALOPS_TARGETS": "/"}, "'FRACTALOPS_TARGETS' (the environment variable"),
        (["runtime", "--dry-run", "--target", ""], {}, "unknown target(s) ''"),
        (["topology", "render-env", "--format", "yaml"], {}, "'yaml' is not one of"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], env: dict[str, str], needle: str) -> None:
    # click's own usage errors come out as the project's errors do: one line on stderr, exit 2.
    result = run(*args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_unwritable_output_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # Writing $GITHUB_ENV into a folder that does not exist is one line and exit 1.
    result = run("topology", "render-env", "--format", "github", GITHUB_ENV=str(tmp_path / "nope" / "env"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {tmp_path / 'nope' / 'env'}: No such file or directory"


def test_dry_run_needs_no_opt_in_outside_ci() -> None:
    # A dry run builds nothing, so it is allowed outside CI without FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CI", "GITHUB_ACTIONS", "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE"}
    }
    result = subprocess.run([str(EXE), "runtime", "--dry-run"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert '"targets"' in result.stdout


@pytest.mark.parametrize(
    ("driver", "extra", "expect"),
    [
        ("kubernetes", [], "--driver kubernetes --driver-opt replicas=2,namespace=buildkit --buildkitd-config"),
        ("docker-container", [], "--driver docker-container --buildkitd-config"),
        ("remote", ["--endpoint", "tcp://127.0.0.1:1234"], "--driver remote --bootstrap tcp://127.0.0.1:1234"),
    ],
)
def test_builder_create_dry_run_works_as_documented(tmp_path: Path, driver: str, extra: list[str], expect: str) -> None:
    # The documented `builder create --dry-run` invocations print the command (and the config), also with FRACTALOPS_NEXUS_VIA set.
    result = run(
        "builder",
        "create",
        "--dry-run",
        "--name",
        "shared",
        "--driver",
        driver,
        *extra,
        XDG_STATE_HOME=str(tmp_path),
        FRACTALOPS_NEXUS_VIA="clusterip",
    )
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout
    assert ("http = true" in result.stdout) == (driver != "remote")
    assert not list(tmp_path.rglob("*.toml"))  # a dry run writes nothing


def test_debug_after_the_subcommand_shows_the_traceback() -> None:
    # release.sh puts the subcommand first, so --debug after it must work as it does before it.
    env = {"FRACTALOPS_SOURCE_COMMIT": "x", "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1"}
    plain = run("runtime", **env)
    debug = run("runtime", "--debug", **env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "UsageError: FRACTALOPS_SOURCE_COMMIT='x'" in debug.stderr
    assert debug.returncode == 2


def test_release_sh_works_through_a_symlink(tmp_path: Path) -> None:
    # A symlink to release.sh (e.g. in ~/bin) still finds the checkout it belongs to.
    link = tmp_path / "release"
    link.symlink_to(Path(__file__).resolve().parents[2] / "ops/containers/fractalops/release.sh")
    result = subprocess.run([str(link), "--help"], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: fractalops-release runtime")


def test_release_sh_works_through_a_symlinked_folder(tmp_path: Path) -> None:
    # A symlink to a folder above release.sh (e.g. ops/containers linked elsewhere) still finds the checkout.
    link = tmp_path / "containers"
    link.symlink_to(Path(__file__).resolve().parents[2] / "ops/containers")
    result = subprocess.run(
        [str(link / "fractalops/release.sh"), "--help"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args", [["events", "summary", "/nonexistent/events.jsonl"], ["topology", "show"], ["promote", "api=x"]]
)
def test_every_subcommand_takes_debug_after_it(args: list[str]) -> None:
    # --debug after any subcommand is accepted and shows the traceback with the same exit code.
    plain = run(*args, FRACTALOPS_TOPOLOGY="/nonexistent/topology.yaml")
    debug = run(*args, "--debug", FRACTALOPS_TOPOLOGY="/nonexistent/topology.yaml")
    assert plain.returncode == debug.returncode == 2, debug.stderr
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr


# The real console entry point (cli.run: its SIGTERM handler, the `handled` decorator, the exit-code mapping) with
# one extra subcommand that waits, so a real signal can reach a command while it runs.
WAITING_COMMAND = """
import sys, time
from release import cli

@cli.main.command("wait-for-signal")
@cli.handled
def wait_for_signal() -> None:
    print("ready", flush=True)
    time.sleep(60)

sys.argv = ["fractalops-release", *sys.argv[1:]]
cli.run()
"""


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_signal_gives_the_same_exit_code_with_or_without_debug(
    signum: int, code: int, word: str, debug: bool
) -> None:
    # SIGTERM exits 143 ("terminated") and Ctrl-C 130 ("interrupted"), with --debug too, which adds the traceback.
    args = ["--debug", "wait-for-signal"] if debug else ["wait-for-signal"]
    with subprocess.Popen(
        [sys.executable, "-c", WAITING_COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"{word}: ")
    assert ("Traceback" in stderr) == debug
