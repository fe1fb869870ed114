"""The command line as a person runs it: one-line errors with the documented exit codes, settings in `--help`, `env`.

In process (click's runner) against a copy of the repository's ops/ and values files, with a pinned environment and
working directory; a subprocess only where a real signal or release.sh is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from release import settings
from release.cli import main
from release.errors import ConfigError, GitError, Terminated

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ops/ and the values files as the working directory; no FRACTALOPS_*, CI or GitHub variables set."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "ops", repo / "ops", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "platform", repo / "platform")
    for name in list(os.environ):
        if name.startswith(("FRACTALOPS_", "GITHUB_", "XDG_", "DOCKER_")) or name in {"CI", "TERM"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(repo)
    return repo


def cli(*args: str, **env: str) -> Result:
    """Run the command line in process through its one exit boundary; exceptions it does not map propagate."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["nosuch"], {}, "No such command 'nosuch'"),
        (["runtime", "--progress", "x"], {}, "'x' is not one of"),
        (["runtime", "--reuse", "sometimes"], {}, "'sometimes' is not one of"),
        (["runtime", "--dry-run"], {"FRACTALOPS_REUSE": "sometimes"}, "FRACTALOPS_REUSE='sometimes': want one of"),
        (["runtime", "--dry-run"], {"FRACTALOPS_PROGRESS": "x"}, "FRACTALOPS_PROGRESS='x': want one of"),
        (["runtime", "--dry-run"], {"FRACTALOPS_TARGETS": "/"}, "FRACTALOPS_TARGETS='/': is a folder"),
        (["runtime", "--dry-run", "--target", ""], {}, "unknown target(s) ''"),
        (["topology", "render-env", "--format", "yaml"], {}, "'yaml' is not one of"),
        (["env"], {"FRACTALOPS_CACHE_DEADLINE": "soon"}, "FRACTALOPS_CACHE_DEADLINE='soon': want a number"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], env: dict[str, str], needle: str) -> None:
    # click's usage errors and bad settings come out as the project's errors do: one line on stderr, exit 2.
    result = cli(*args, **env)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr


def test_a_bad_setting_of_another_command_does_not_stop_this_one() -> None:
    # FRACTALOPS_DEVSTACK_PORT_BASE is the devstack's: a bad value stops `devstack up`, not `topology show`.
    assert cli("topology", "show", FRACTALOPS_DEVSTACK_PORT_BASE="1").exit_code == 0
    refused = cli("devstack", "up", FRACTALOPS_DEVSTACK_PORT_BASE="1")
    assert refused.exit_code == 2 and "port base 1 is outside" in refused.stderr


def test_unwritable_output_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # Writing $GITHUB_ENV into a folder that does not exist is one line and exit 1.
    result = cli("topology", "render-env", "--format", "github", GITHUB_ENV=str(tmp_path / "nope" / "env"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'nope' / 'env'}: No such file or directory"


def test_render_env_for_github_appends_to_github_env(tmp_path: Path) -> None:
    # --format github appends to $GITHUB_ENV (the next steps see the variables) and says how many lines it added.
    github_env = tmp_path / "github-env"
    github_env.write_text("EARLIER=1\n")
    result = cli("topology", "render-env", "--format", "github", GITHUB_ENV=str(github_env))
    assert result.exit_code == 0, result.stderr
    text = github_env.read_text()
    assert text.startswith("EARLIER=1\n") and "FRACTALOPS_BUILDCACHE_REF=" in text
    assert result.stderr.startswith(f"appended {text.count(chr(10)) - 1} line(s)")


def test_dry_run_needs_no_opt_in_outside_ci() -> None:
    # A dry run builds nothing, so it is allowed outside CI without FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE.
    result = cli("runtime", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert '"targets"' in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "reuse"),
    [
        ([], {}, False),  # promote (the default) on a smoke build: it builds
        ([], {"FRACTALOPS_REUSE": "always"}, True),
        (["--reuse", "never"], {"FRACTALOPS_REUSE": "always"}, False),  # the flag beats the environment
        (["--reuse", "always"], {"FRACTALOPS_REUSE": "never"}, True),
    ],
)
def test_the_dry_run_says_whether_unchanged_targets_would_be_reused(
    args: list[str], env: dict[str, str], reuse: bool
) -> None:
    result = cli("runtime", "--dry-run", *args, **env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["reuse_unchanged"] is reuse


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
    args = ["builder", "create", "--dry-run", "--name", "shared", "--driver", driver, *extra]
    result = cli(*args, XDG_STATE_HOME=str(tmp_path / "state"), FRACTALOPS_NEXUS_VIA="clusterip")
    assert result.exit_code == 0, result.stderr
    assert expect in result.stdout
    assert ("http = true" in result.stdout) == (driver != "remote")
    if driver != "remote":
        assert (
            f"# {tmp_path / 'state' / 'fractalops-release' / 'builders' / 'shared' / 'buildkitd.toml'}" in result.stdout
        )
    assert not list(tmp_path.rglob("*.toml"))  # a dry run writes nothing


def test_builder_create_remote_takes_the_endpoint_from_the_topology(tmp_path: Path) -> None:
    # `builder create --driver remote` without --endpoint: the dry run shows the topology's shared BuildKit.
    result = cli("builder", "create", "--dry-run", "--name", "shared", "--driver", "remote")
    assert result.exit_code == 0, result.stderr
    assert "--driver remote --bootstrap tcp://buildkit.fractalops.svc:1234" in result.stdout
    assert "note: endpoint tcp://buildkit.fractalops.svc:1234 is the topology's shared BuildKit" in result.stdout


def test_builder_create_remote_without_any_endpoint_is_one_usage_line(checkout: Path) -> None:
    # No --endpoint and no builder section in the topology: exit 2, one line saying how to give one.
    topology = checkout / "ops" / "topology" / "fractalops.yaml"
    text = topology.read_text()
    topology.write_text(text[: text.index("\n# The team's shared BuildKit")] + "\n")
    result = cli("builder", "create", "--dry-run", "--name", "shared", "--driver", "remote")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --endpoint: the remote driver needs the buildkitd address: give --endpoint tcp://HOST:PORT, "
        "or a shared BuildKit in the topology (builder.endpoint)"
    ]


def test_debug_after_the_subcommand_shows_the_traceback() -> None:
    # release.sh puts the subcommand first, so --debug after it must work as it does before it.
    env = {"FRACTALOPS_SOURCE_COMMIT": "x", "FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE": "1"}
    plain = cli("runtime", **env)
    debug = cli("runtime", "--debug", **env)
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "UsageError: FRACTALOPS_SOURCE_COMMIT='x'" in debug.stderr
    assert debug.exit_code == 2


@pytest.mark.parametrize(
    "args", [["events", "summary", "/nonexistent/events.jsonl"], ["topology", "show"], ["promote", "api=x"]]
)
def test_every_subcommand_takes_debug_after_it(args: list[str]) -> None:
    # --debug after any subcommand is accepted and shows the traceback with the same exit code.
    plain = cli(*args, FRACTALOPS_TOPOLOGY="/nonexistent/topology.yaml")
    debug = cli(*args, "--debug", FRACTALOPS_TOPOLOGY="/nonexistent/topology.yaml")
    assert plain.exit_code == debug.exit_code == 2, debug.stderr
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr


def test_every_setting_is_listed_in_the_help_of_each_command_that_reads_it() -> None:
    # --help of a command names each FRACTALOPS_* variable it reads, with its description.
    for name in settings.Settings.model_fields:
        commands = settings._extra(name)["commands"]
        assert commands, name
        for command in commands:
            result = cli(*command.split(), "--help")
            assert result.exit_code == 0, result.output
            assert settings.variable(name) in result.stdout, f"{settings.variable(name)} not in `{command} --help`"


def test_help_of_a_command_lists_only_the_settings_it_reads() -> None:
    # `events summary` reads the events file only; the devstack's settings are not in its help.
    text = cli("events", "summary", "--help").stdout
    assert "FRACTALOPS_BUILD_EVENTS_FILE" in text
    assert "FRACTALOPS_DEVSTACK_DIR" not in text and "FRACTALOPS_GITOPS_AUTHOR" not in text


def test_env_prints_every_setting_with_its_value_and_source_secrets_masked() -> None:
    # `env` shows each variable once: its value (secrets as ***) and whether it came from the environment or the default.
    result = cli("env", FRACTALOPS_BUILDER="ci-builder", FRACTALOPS_NEXUS_PULL_PASSWORD="hunter2")
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line.split(None, 2)[1:] for line in result.stdout.splitlines()}
    assert set(lines) == {settings.variable(name) for name in settings.Settings.model_fields}
    assert lines["FRACTALOPS_BUILDER"] == ["environment", "ci-builder"]
    assert lines["FRACTALOPS_GITOPS_REMOTE"] == ["default", "origin"]
    assert lines["FRACTALOPS_NEXUS_PULL_PASSWORD"] == ["environment", "***"]
    assert "hunter2" not in result.output


def test_env_json_is_one_document_of_values_and_sources() -> None:
    # `env --json`: variable → {value, source}, for scripts.
    result = cli("env", "--json", FRACTALOPS_CACHE_DEADLINE="30")
    document = json.loads(result.stdout)
    assert document["FRACTALOPS_CACHE_DEADLINE"] == {"value": "30.0", "source": "environment"}
    assert document["FRACTALOPS_PROGRESS"] == {"value": "auto", "source": "default"}


def test_a_flag_beats_the_environment(tmp_path: Path) -> None:
    # --via clusterip wins over FRACTALOPS_NEXUS_VIA=service; the variable alone decides without the flag.
    by_env = cli("topology", "render-buildkitd", FRACTALOPS_NEXUS_VIA="clusterip").stdout
    by_flag = cli("topology", "render-buildkitd", "--via", "clusterip", FRACTALOPS_NEXUS_VIA="service").stdout
    default = cli("topology", "render-buildkitd").stdout
    assert by_env == by_flag != default


def test_events_summary_reads_the_file_named_by_the_setting(tmp_path: Path) -> None:
    # FILE, else FRACTALOPS_BUILD_EVENTS_FILE, else the state folder: the same rule as the release's own events.
    (tmp_path / "state" / "fractalops-release").mkdir(parents=True)
    (tmp_path / "state" / "fractalops-release" / "build-events.jsonl").write_text("")
    assert cli("events", "summary", XDG_STATE_HOME=str(tmp_path / "state")).stdout == "no build events\n"
    missing = cli("events", "summary", FRACTALOPS_BUILD_EVENTS_FILE=str(tmp_path / "none.jsonl"))
    assert missing.exit_code == 2 and str(tmp_path / "none.jsonl") in missing.stderr


def test_render_registries_takes_the_password_from_the_setting(tmp_path: Path) -> None:
    # FRACTALOPS_NEXUS_PULL_PASSWORD is required, goes into the file only, and the file is 0600.
    missing = cli("topology", "render-registries", "--output", str(tmp_path / "r.yaml"))
    assert missing.exit_code == 2 and "FRACTALOPS_NEXUS_PULL_PASSWORD is not set" in missing.stderr
    done = cli(
        "topology", "render-registries", "--output", str(tmp_path / "r.yaml"), FRACTALOPS_NEXUS_PULL_PASSWORD="pw1"
    )
    assert done.exit_code == 0, done.stderr
    assert '"pw1"' in (tmp_path / "r.yaml").read_text() and "pw1" not in done.output
    assert (tmp_path / "r.yaml").stat().st_mode & 0o777 == 0o600


def test_release_sh_works_through_a_symlink(tmp_path: Path) -> None:
    # A symlink to release.sh (e.g. in ~/bin) still finds the checkout it belongs to.
    link = tmp_path / "release"
    link.symlink_to(ROOT / "ops/containers/fractalops/release.sh")
    result = subprocess.run([str(link), "--help"], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: fractalops-release runtime")


def test_release_sh_works_through_a_symlinked_folder(tmp_path: Path) -> None:
    # A symlink to a folder above release.sh (e.g. ops/containers linked elsewhere) still finds the checkout.
    link = tmp_path / "containers"
    link.symlink_to(ROOT / "ops/containers")
    result = subprocess.run(
        [str(link / "fractalops/release.sh"), "--help"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr


# The real entry point (cli.run: its SIGTERM handler and the one exit-code mapping) with one extra subcommand that
# waits, so a real signal can reach a command while it runs.
WAITING_COMMAND = """
import sys, time
from release import cli

@cli.main.command("wait-for-signal")
def wait_for_signal() -> None:
    print("ready", flush=True)
    time.sleep(60)

sys.exit(cli.run(sys.argv[1:]))
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


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (OSError(28, "No space left on device", "/full/file"), 1, "error: /full/file: No space left on device"),
        (GitError("push failed"), 1, "error: push failed"),
        (ConfigError("bad file"), 2, "error: bad file"),
        (KeyboardInterrupt(), 130, "interrupted: "),
        (Terminated(), 143, "terminated: "),
    ],
)
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_run_is_the_one_place_errors_become_exit_codes(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, code: int, line: str, debug: bool
) -> None:
    # Whatever a command raises, `run()` maps it the same way with or without --debug, which only adds the traceback.
    def failing_topology(*_args: object, **_kwargs: object) -> None:
        raise raised

    monkeypatch.setattr("release.topology.load_topology", failing_topology)
    result = cli(*(["--debug"] if debug else []), "topology", "show")
    assert result.exit_code == code
    assert result.stderr.strip().splitlines()[-1].startswith(line), result.stderr
    assert ("Traceback" in result.stderr) == debug


def test_help_is_instant_it_loads_no_settings() -> None:
    # --help imports neither pydantic nor the core modules: start-up stays cheap.
    code = "import sys; from release.cli import run; run(['--help']); print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'release.topology', 'release.driver'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
