"""Settings: flag > environment > default, one-line errors naming the variable or flag, secrets masked."""

from __future__ import annotations

from pathlib import Path

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
    ],
)
def test_a_bad_value_is_a_one_line_usage_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    # Exit 2, one line, the variable and the value.
    with pytest.raises(UsageError) as caught:
        settings.load(environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


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
    # --help and the README table come from these: none may be blank.
    for name, field in settings.Settings.model_fields.items():
        assert field.description, name
        assert any(
            name in settings.read_by(c) for c in ("runtime", "promote", "topology", "devstack", "events", "builder")
        )


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
