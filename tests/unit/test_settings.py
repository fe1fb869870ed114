"""Settings: flag > environment > default, one-line errors naming the variable or flag, secrets masked."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from release import settings
from release.errors import UsageError


def test_a_flag_beats_the_environment_which_beats_the_default() -> None:
    # Each value says where it came from.
    loaded = settings.load(
        {"FRACTALOPS_BUILDER": "from-env", "FRACTALOPS_CACHE_DEADLINE": "30", "FRACTALOPS_GITOPS_REMOTE": ""},
        {"builder": "from-flag"},
    )
    assert loaded.settings.builder == "from-flag" and loaded.sources["builder"] == "flag"
    assert loaded.settings.cache_deadline == 30.0 and loaded.sources["cache_deadline"] == "environment"
    assert loaded.settings.gitops_remote == "origin" and loaded.sources["gitops_remote"] == "default"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FRACTALOPS_CACHE_DEADLINE": "inf"}, "FRACTALOPS_CACHE_DEADLINE='inf': want seconds"),
        ({"FRACTALOPS_CACHE_DEADLINE": "soon"}, "FRACTALOPS_CACHE_DEADLINE='soon': "),
        ({"FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS": "maybe"}, "FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS='maybe'"),
        ({"FRACTALOPS_GITOPS_AUTHOR": "A <a@b>\nInjected: x"}, "FRACTALOPS_GITOPS_AUTHOR="),
        ({"FRACTALOPS_NEXUS_VIA": "vpn"}, "FRACTALOPS_NEXUS_VIA='vpn'"),
        ({"FRACTALOPS_GITOPS_PUSH_ATTEMPTS": "0"}, "FRACTALOPS_GITOPS_PUSH_ATTEMPTS='0'"),
        ({"FRACTALOPS_CACHE_MIN_RATE": "5mbit"}, "FRACTALOPS_CACHE_MIN_RATE='5mbit': want bytes per second"),
        ({"FRACTALOPS_CACHE_MIN_RATE": "-1"}, "FRACTALOPS_CACHE_MIN_RATE='-1': want bytes per second"),
    ],
)
def test_a_bad_value_is_a_one_line_usage_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    # Exit 2, one line, the variable and the value.
    with pytest.raises(UsageError) as caught:
        settings.load(environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("500KB/s", 500e3), ("2MB/s", 2e6), ("64KiB/s", 65536.0), ("100 kB/s", 100e3), ("1000", 1000.0), ("0", 0.0)],
)
def test_the_minimum_cache_rate_reads_bytes_per_second_with_units(text: str, rate: float) -> None:
    # k, M, G are powers of 1000, Ki, Mi, Gi of 1024; a plain number is bytes per second.
    assert settings.load({"FRACTALOPS_CACHE_MIN_RATE": text}).settings.cache_min_rate == rate


def test_a_bad_flag_value_names_the_flag() -> None:
    # A value given on the command line is reported under its flag.
    with pytest.raises(UsageError, match=r"^--cache-deadline='-1\.0': "):
        settings.load({}, {"cache_deadline": -1.0})


def test_secrets_are_masked_in_the_description_and_in_errors() -> None:
    # The sink URL and the pull password are never shown.
    loaded = settings.load(
        {"FRACTALOPS_BUILD_EVENTS_URL": "https://u:hunter2@sink/x", "FRACTALOPS_NEXUS_PULL_PASSWORD": "hunter2"}
    )
    shown = settings.describe(loaded)
    assert ("FRACTALOPS_NEXUS_PULL_PASSWORD", "***", "environment") in shown
    assert "hunter2" not in repr(shown) and "hunter2" not in repr(loaded.settings)


def test_platforms_are_split_on_commas() -> None:
    # FRACTALOPS_PLATFORM takes a comma list, as buildx does.
    loaded = settings.load({"FRACTALOPS_PLATFORM": "linux/amd64, linux/arm64"})
    assert loaded.settings.platform == ("linux/amd64", "linux/arm64")


def test_every_setting_has_a_description_and_at_least_one_command() -> None:
    # --help and the README table come from these: none may be blank, and every command named is a real one.
    from release.cli import main

    for name, field in settings.Settings.model_fields.items():
        assert field.description, name
        commands = settings._extra(name)["commands"]
        assert commands, name
        for path in commands:
            group: object = main
            for word in path.split():
                assert isinstance(group, click.Group) and word in group.commands, f"{name}: no command {path!r}"
                group = group.commands[word]


def test_the_ci_context_is_read_beside_the_settings(tmp_path: Path) -> None:
    # CI=true or GITHUB_ACTIONS=true means CI; GitHub's files are paths.
    loaded = settings.load({"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "out")})
    assert loaded.context.in_ci
    assert loaded.context.github_output == tmp_path / "out"
    assert not settings.load({"CI": "0"}).context.in_ci


def test_default_locations_follow_the_state_folder_and_the_events_file(tmp_path: Path) -> None:
    # Events in XDG_STATE_HOME unless named; the release record beside them unless FRACTALOPS_EVENTS_DIR says.
    base = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path / "home")}
    loaded = settings.load(base)
    assert loaded.events_file == tmp_path / "state" / "fractalops-release" / "build-events.jsonl"
    assert loaded.record_file == tmp_path / "state" / "fractalops-release" / "releases.jsonl"
    assert loaded.context.docker_config_dir == tmp_path / "home" / ".docker"
    named = settings.load({**base, "FRACTALOPS_BUILD_EVENTS_FILE": str(tmp_path / "ci" / "ev.jsonl")})
    assert named.record_file == tmp_path / "ci" / "releases.jsonl"
    moved = settings.load({**base, "FRACTALOPS_EVENTS_DIR": str(tmp_path / "records")})
    assert moved.record_file == tmp_path / "records" / "releases.jsonl"


def test_the_readme_table_is_generated_from_the_settings() -> None:
    # README.md holds exactly settings.markdown_table() between its two marker comments: one source for both.
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    begin, end = text.index("<!-- settings:begin"), text.index("<!-- settings:end -->")
    between = text[text.index("\n", begin) + 1 : end]
    assert between == settings.markdown_table()


def test_no_module_below_the_command_line_reads_the_environment() -> None:
    # Only settings.py, the CLI and the process adapter (which builds child environments) read os.environ.
    root = Path(__file__).resolve().parents[2]
    allowed = {"release/settings.py", "release/adapters/process.py"}
    readers = {
        path.relative_to(root).as_posix()
        for path in (root / "release").rglob("*.py")
        if re.search(r"os\.environ|os\.getenv|getenv\(", path.read_text())
    }
    assert {p for p in readers if not p.startswith("release/cli/")} <= allowed, readers


def test_a_bad_value_stops_only_the_commands_that_read_it() -> None:
    # A variable meant for another command (a bad devstack port base) cannot stop `topology check`; `devstack up`
    # and a load of every setting (`env`) still refuse it.
    environ = {"FRACTALOPS_DEVSTACK_PORT_BASE": "abc", "FRACTALOPS_PROGRESS": "x"}
    loaded = settings.load(environ, command="topology check")
    assert loaded.settings.devstack_port_base is None and loaded.sources["devstack_port_base"] == "default"
    with pytest.raises(UsageError, match="FRACTALOPS_DEVSTACK_PORT_BASE='abc'"):
        settings.load(environ, command="devstack up")
    with pytest.raises(UsageError, match="FRACTALOPS_PROGRESS='x'"):
        settings.load(environ, command="runtime")
    with pytest.raises(UsageError):
        settings.load(environ)
