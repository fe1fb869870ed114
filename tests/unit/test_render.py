"""Renderers: the env survives a real bash, registries.yaml and buildkitd.toml parse back, secrets stay hidden."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from release.cli import main
from release.topology import load_topology
from release.topology.env import format_env, render_env
from release.topology.model import Topology

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "ops/topology/fractalops.yaml"
PASSWORD = "pa$$ 'w\"ord`x"


@pytest.fixture
def topo() -> Topology:
    return load_topology(TOPOLOGY)


def _source_in_bash(script: str, names: list[str]) -> dict[str, str]:
    """Source `script` in a real bash and read the variables back as JSON."""
    reader = "import json, os, sys; print(json.dumps({n: os.environ.get(n) for n in sys.argv[1:]}))"
    proc = subprocess.run(
        ["bash", "-c", 'source /dev/stdin; exec python3 -c "$0" "$@"', reader, *names],
        input=script,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    return json.loads(proc.stdout)


def test_render_env_has_every_cache_variable(topo: Topology) -> None:
    # The env names the docker-group, apt, pip, npm and buildcache endpoints from the topology.
    env = render_env(topo)
    group = "http://nexus.nexus.svc:8083"
    assert env["FRACTALOPS_GHCR_REGISTRY_CACHE"] == group
    assert env["FRACTALOPS_DOCKER_IO_MIRROR_ENDPOINT"] == group
    assert env["FRACTALOPS_GHCR_IO_MIRROR_ENDPOINT"] == group
    assert env["FRACTALOPS_APT_CACHE_URL"] == "http://nexus.nexus.svc:8081/repository/apt-debian/"
    assert env["FRACTALOPS_PIP_INDEX_URL"] == "http://nexus.nexus.svc:8081/repository/pypi-group/simple"
    assert env["FRACTALOPS_NPM_REGISTRY_URL"] == "http://nexus.nexus.svc:8081/repository/npm-group/"
    assert env["FRACTALOPS_BUILDCACHE_REF"] == "nexus.nexus.svc:8082/fractalops/buildcache"
    assert list(env) == sorted(env)


def test_render_env_names_the_shared_buildkit_only_when_the_topology_has_one(topo: Topology) -> None:
    # FRACTALOPS_BUILDKIT_ENDPOINT is builder.endpoint (the same whichever way builders reach Nexus); no builder, no name.
    assert render_env(topo)["FRACTALOPS_BUILDKIT_ENDPOINT"] == "tcp://buildkit.fractalops.svc:1234"
    assert render_env(topo, "clusterip")["FRACTALOPS_BUILDKIT_ENDPOINT"] == "tcp://buildkit.fractalops.svc:1234"
    assert "FRACTALOPS_BUILDKIT_ENDPOINT" not in render_env(topo.model_copy(update={"builder": None}))


def test_shell_env_sourced_by_bash_gives_back_every_value(topo: Topology) -> None:
    # `source` of the shell format restores each value exactly.
    env = render_env(topo)
    assert _source_in_bash(format_env(env, "shell"), list(env)) == env


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"FRACTALOPS_[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40),
        min_size=1,
        max_size=5,
    )
)
def test_hostile_values_survive_source(env: dict[str, str]) -> None:
    # Values with spaces, quotes, $, backticks and newlines survive `source` unchanged.
    assert _source_in_bash(format_env(env, "shell"), list(env)) == env


def test_github_format_appends_to_github_env(topo: Topology, tmp_path: Path) -> None:
    # --format github appends NAME=value lines to $GITHUB_ENV in its documented format.
    github_env = tmp_path / "github_env"
    github_env.write_text("EARLIER=1\n")
    result = CliRunner(env={"GITHUB_ENV": str(github_env)}).invoke(
        main, ["--topology", str(TOPOLOGY), "topology", "render-env", "--format", "github"]
    )
    assert result.exit_code == 0, result.output
    lines = github_env.read_text().splitlines()
    assert lines[0] == "EARLIER=1"
    assert dict(line.split("=", 1) for line in lines[1:]) == render_env(topo)


def test_github_format_uses_a_delimiter_for_multiline_values() -> None:
    # A value with a newline is written with the heredoc form GitHub documents.
    text = format_env({"FRACTALOPS_X": "a\nb"}, "github")
    first, value, closing = text.splitlines()[0], text.splitlines()[1:3], text.splitlines()[3]
    assert first.startswith("FRACTALOPS_X<<ghadelimiter_")
    assert value == ["a", "b"]
    assert closing == first.split("<<", 1)[1]


def test_json_and_dotenv_formats_round_trip(topo: Topology) -> None:
    # JSON parses back to the env; dotenv lines carry every name once.
    env = render_env(topo)
    assert json.loads(format_env(env, "json")) == env
    dotenv = format_env(env, "dotenv").splitlines()
    assert [line.split("=", 1)[0] for line in dotenv] == list(env)


def test_registries_yaml_parses_to_the_k3s_structure(tmp_path: Path) -> None:
    # registries.yaml mirrors docker.io and ghcr.io to the node mirror with shim-puller auth, mode 0600.
    out = tmp_path / "registries.yaml"
    result = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD}).invoke(
        main, ["--topology", str(TOPOLOGY), "topology", "render-registries", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    data = YAML(typ="safe").load(out.read_text())
    assert data == {
        "mirrors": {
            "docker.io": {"endpoint": ["http://127.0.0.1:30083"]},
            "ghcr.io": {"endpoint": ["http://127.0.0.1:30083"]},
        },
        "configs": {"127.0.0.1:30083": {"auth": {"username": "shim-puller", "password": PASSWORD}}},
    }
    assert PASSWORD not in result.stdout
    assert PASSWORD not in result.stderr


def test_registries_without_password_writes_nothing(tmp_path: Path) -> None:
    # An unset password is a clear error, and no file appears.
    out = tmp_path / "registries.yaml"
    result = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": ""}).invoke(
        main, ["--topology", str(TOPOLOGY), "topology", "render-registries", "--output", str(out)]
    )
    assert result.exit_code == 2
    assert "FRACTALOPS_NEXUS_PULL_PASSWORD is not set" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_registries_check_reports_drift_with_the_password_masked(tmp_path: Path) -> None:
    # --check exits 1 on drift and shows the diff without the password; 0 when in sync.
    out = tmp_path / "registries.yaml"
    runner = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD})
    args = ["--topology", str(TOPOLOGY), "topology", "render-registries"]
    assert runner.invoke(main, [*args, "--output", str(out)]).exit_code == 0
    assert runner.invoke(main, [*args, "--check", str(out)]).exit_code == 0
    out.write_text(out.read_text().replace("shim-puller", "someone-else"))
    result = runner.invoke(main, [*args, "--check", str(out)])
    assert result.exit_code == 1
    assert '-      username: "someone-else"' in result.stdout
    assert '+      username: "shim-puller"' in result.stdout
    assert PASSWORD not in result.output
    assert "********" in result.stdout


def test_registries_check_hides_a_changed_password(tmp_path: Path) -> None:
    # When only the password differs, --check says so without printing either password.
    out = tmp_path / "registries.yaml"
    args = ["--topology", str(TOPOLOGY), "topology", "render-registries"]
    CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": "old-secret-1"}).invoke(main, [*args, "--output", str(out)])
    result = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD}).invoke(main, [*args, "--check", str(out)])
    assert result.exit_code == 1
    assert "only the password or another credential differs" in result.output
    assert "old-secret-1" not in result.output
    assert PASSWORD not in result.output


def test_buildkitd_toml_parses_to_mirrors_and_http_connectors(topo: Topology) -> None:
    # buildkitd.toml mirrors docker.io and ghcr.io to the docker-group and marks both connectors plain HTTP.
    result = CliRunner().invoke(main, ["--topology", str(TOPOLOGY), "topology", "render-buildkitd"])
    assert result.exit_code == 0
    data = tomllib.loads(result.stdout)
    assert data == {
        "registry": {
            "docker.io": {"mirrors": ["nexus.nexus.svc:8083"]},
            "ghcr.io": {"mirrors": ["nexus.nexus.svc:8083"]},
            "nexus.nexus.svc:8083": {"http": True},
            "nexus.nexus.svc:8082": {"http": True},
        }
    }


def test_buildkitd_via_clusterip_names_the_ip(topo: Topology) -> None:
    # --via clusterip reaches Nexus by its ClusterIP for builders without cluster DNS.
    from release.topology.buildkitd import render_buildkitd

    data = tomllib.loads(render_buildkitd(topo, "clusterip"))
    ip = topo.registry_cache.host_ip
    assert data["registry"]["docker.io"]["mirrors"] == [f"{ip}:8083"]
    assert data["registry"][f"{ip}:8082"] == {"http": True}


@pytest.mark.parametrize("via", ["service", "clusterip"])
def test_buildcache_host_is_plain_http_in_the_builder_config_for_either_way_in(topo: Topology, via: str) -> None:
    # The cache host the env and the driver use is the one buildkitd.toml marks plain HTTP (so the cache is not lost).
    from release.build.cache import cache_refs
    from release.topology.buildkitd import render_buildkitd

    registries = tomllib.loads(render_buildkitd(topo, via))["registry"]
    cache_host = render_env(topo, via)["FRACTALOPS_BUILDCACHE_REF"].split("/", 1)[0]
    assert registries[cache_host] == {"http": True}
    sources, dest = cache_refs(topo, "api", "main", via)
    assert all(f"ref={cache_host}/" in ref for ref in (*sources, dest))


RENDER_OUTPUT_COMMANDS = [["render-registries"], ["render-buildkitd"]]


@pytest.mark.parametrize("command", RENDER_OUTPUT_COMMANDS, ids=["registries", "buildkitd"])
def test_output_never_follows_a_symlink_left_in_a_sticky_folder(tmp_path: Path, command: list[str]) -> None:
    # A link at the --output path (here another user's, in a sticky world-writable folder) is refused, not followed:
    # the file it names keeps its bytes, the link stays, nothing else is written.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    protected = tmp_path / "protected.conf"
    protected.write_text("root's own\n")
    protected.chmod(0o644)
    for name, target in (("out.yaml", protected), ("dangling.yaml", tmp_path / "nowhere.conf")):
        link = shared / name
        link.symlink_to(target)
        if os.geteuid() == 0:
            os.lchown(link, 65534, 65534)  # nobody's link
        result = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD}).invoke(
            main, ["--topology", str(TOPOLOGY), "topology", *command, "--output", str(link)]
        )
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"error: {link}: a symbolic link; refusing to write through it (name the file it points to)"
        ]
        assert link.is_symlink() and os.readlink(link) == str(target)
    assert protected.read_text() == "root's own\n" and stat.S_IMODE(protected.stat().st_mode) == 0o644
    assert not (tmp_path / "nowhere.conf").exists()
    assert sorted(p.name for p in shared.iterdir()) == ["dangling.yaml", "out.yaml"]


@pytest.mark.parametrize("command", RENDER_OUTPUT_COMMANDS, ids=["registries", "buildkitd"])
def test_output_refuses_devices_folders_and_missing_folders(tmp_path: Path, command: list[str]) -> None:
    # --output never replaces a device or a folder, and needs an existing folder; each is one line, exit 2.
    runner = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD})
    args = ["--topology", str(TOPOLOGY), "topology", *command, "--output"]
    for target in ("/dev/null", str(tmp_path), "-", str(tmp_path / "missing" / "r.yaml")):
        result = runner.invoke(main, [*args, target])
        assert result.exit_code == 2, (target, result.output)
        assert PASSWORD not in result.output
    assert Path("/dev/null").is_char_device()
    assert not Path("-").exists()


def render_with_umask(umask: int, out: Path, command: str) -> None:
    """Run `topology COMMAND --output OUT` as a process whose umask is `umask`."""
    exe = Path(sys.executable).with_name("fractalops-release")
    subprocess.run(
        [str(exe), "--topology", str(TOPOLOGY), "topology", command, "--output", str(out)],
        env={**os.environ, "FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD},
        preexec_fn=lambda: os.umask(umask),
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_output_modes_follow_the_umask_unless_the_file_holds_a_secret(tmp_path: Path, umask: int, mode: int) -> None:
    # A new buildkitd.toml gets 0644 less the umask; registries.yaml (the pull password) is 0600 whatever the umask.
    render_with_umask(umask, tmp_path / "buildkitd.toml", "render-buildkitd")
    render_with_umask(umask, tmp_path / "registries.yaml", "render-registries")
    assert stat.S_IMODE((tmp_path / "buildkitd.toml").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "registries.yaml").stat().st_mode) == 0o600


def test_output_keeps_the_mode_of_a_file_it_replaces_unless_it_holds_a_secret(tmp_path: Path) -> None:
    # Replacing a file keeps its mode (buildkitd.toml), except that a file holding a secret is always 0600.
    for name in ("buildkitd.toml", "registries.yaml"):
        (tmp_path / name).write_text("old\n")
        (tmp_path / name).chmod(0o604)
    render_with_umask(0o022, tmp_path / "buildkitd.toml", "render-buildkitd")
    render_with_umask(0o022, tmp_path / "registries.yaml", "render-registries")
    assert stat.S_IMODE((tmp_path / "buildkitd.toml").stat().st_mode) == 0o604
    assert stat.S_IMODE((tmp_path / "registries.yaml").stat().st_mode) == 0o600


def test_render_env_via_clusterip_names_the_clusterip_everywhere(topo: Topology) -> None:
    # --via clusterip: every Nexus endpoint (mirrors, apt, pip, npm, build cache) uses the ClusterIP, no service name.
    env = render_env(topo, "clusterip")
    ip = topo.registry_cache.host_ip
    assert env["FRACTALOPS_DOCKER_IO_MIRROR_ENDPOINT"] == f"http://{ip}:8083"
    assert env["FRACTALOPS_PIP_INDEX_URL"] == f"http://{ip}:8081/repository/pypi-group/simple"
    assert env["FRACTALOPS_BUILDCACHE_REF"] == f"{ip}:8082/fractalops/buildcache"
    assert not [k for k, v in env.items() if "nexus.nexus.svc" in v]


def test_registries_check_masks_every_secret_and_marks_a_changed_one(tmp_path: Path) -> None:
    # Drift with other changes: a token line is masked too, and a password that changed shows as changed, masked.
    out = tmp_path / "registries.yaml"
    args = ["--topology", str(TOPOLOGY), "topology", "render-registries"]
    CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": "old-secret-1"}).invoke(main, [*args, "--output", str(out)])
    out.write_text(out.read_text().replace("shim-puller", "someone") + "      token: S3cr3t!tok\n")
    result = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD}).invoke(main, [*args, "--check", str(out)])
    assert result.exit_code == 1
    for secret in ("old-secret-1", "S3cr3t!tok", PASSWORD):
        assert secret not in result.output
    assert '-      password: "******** (differs)"' in result.stdout
    assert '+      password: "********"' in result.stdout


NODE_HEAD = (
    'mirrors:\n  "docker.io":\n    endpoint:\n      - "http://127.0.0.1:30083"\n'
    '  "ghcr.io":\n    endpoint:\n      - "http://127.0.0.1:30083"\nconfigs:\n'
)
NODE_SECRET = "N0de-S3cret/with spaces"
NODE_AUTH = base64.b64encode(f"shim-puller:{NODE_SECRET}".encode()).decode()


@pytest.mark.parametrize(
    "configs",
    [
        f'  "127.0.0.1:30083":\n    auth:\n      username: someone\n      auth: {NODE_AUTH}\n',
        f'  "127.0.0.1:30083":\n    auth:\n      username: someone\n      identity_token: "{NODE_SECRET}"\n',
        f'  "127.0.0.1:30083":\n    auth: {{username: someone, password: "{NODE_SECRET}"}}\n',
        f'  "127.0.0.1:30083": {{auth: {{username: someone, password: "{NODE_SECRET}"}}}}\n',
        f'  "127.0.0.1:30083":\n    auth:\n      username: someone\n      password: >-\n        {NODE_SECRET}\n',
        f'  "127.0.0.1:30083":\n    auth:\n      username: someone\n      password: |\n        {NODE_SECRET}\n',
        f'  "127.0.0.1:30083":\n    auth:\n      username: someone\n      password:\n        {NODE_SECRET}\n',
        '  "127.0.0.1:30083":\n    auth:\n      username: someone\n      password: N0de-S3cret/with\n        spaces\n',
        f"  '127.0.0.1:30083':\n    'auth':\n      'username': someone\n      'pass''word': x\n      'password': '{NODE_SECRET}'\n",
        f'  "127.0.0.1:30083":\n    auth:\n      username: someone\n      ? password\n      : "{NODE_SECRET}"\n',
        '  "127.0.0.1:30083":\n    auth:\n      username: someone\n      password: "N0de-S3cret\\x2fwith spaces"\n',
    ],
    ids=[
        "auth-base64",
        "identity_token",
        "flow",
        "flow-outer",
        "folded",
        "literal",
        "plain-next-line",
        "plain-multiline",
        "single-quoted",
        "explicit-key",
        "escaped",
    ],
)
def test_registries_check_never_prints_a_node_secret_in_any_form(tmp_path: Path, configs: str) -> None:
    # --check masks every credential field by structure: whatever YAML form holds the node's secret, it is not shown.
    node = tmp_path / "registries.yaml"
    node.write_text(NODE_HEAD + configs)
    result = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD}).invoke(
        main, ["--topology", str(TOPOLOGY), "topology", "render-registries", "--check", str(node)]
    )
    assert result.exit_code == 1, result.output
    for secret in (NODE_AUTH, "N0de", "S3cret", "spaces", PASSWORD):
        assert secret not in result.output
    assert '-      username: "someone"' in result.stdout
    assert '+      username: "shim-puller"' in result.stdout
    assert "********" in result.stdout


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            f'configs:\n  "127.0.0.1:30083":\n    auth:\n      password: "{NODE_SECRET}\n      x: [\n'.encode(),
            "not valid YAML",
        ),
        (f"configs:\n  a: &s {{password: {NODE_SECRET}}}\n  b: *s\n".encode(), "not valid YAML"),
        (f"configs:\n  a: {{password: {NODE_SECRET}, password: x}}\n".encode(), "not valid YAML"),
        (f"configs:\n  a: {{password: {NODE_SECRET}\xff}}\n".encode("latin-1"), "not UTF-8"),
    ],
    ids=["broken", "alias", "duplicate-key", "not-utf8"],
)
def test_registries_check_of_a_broken_node_file_shows_none_of_it(tmp_path: Path, content: bytes, needle: str) -> None:
    # A node file that cannot be read as YAML has drifted; its text (which may hold a secret) is not shown.
    node = tmp_path / "registries.yaml"
    node.write_bytes(content)
    result = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD}).invoke(
        main, ["--topology", str(TOPOLOGY), "topology", "render-registries", "--check", str(node)]
    )
    assert result.exit_code == 1
    assert "N0de" not in result.output and "S3cret" not in result.output and PASSWORD not in result.output
    assert needle in result.output


def test_registries_check_of_a_file_differing_only_in_layout_says_so(tmp_path: Path) -> None:
    # Comments and layout are not settings: --check says the file differs only there, and shows no text of it.
    out = tmp_path / "registries.yaml"
    runner = CliRunner(env={"FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD})
    args = ["--topology", str(TOPOLOGY), "topology", "render-registries"]
    assert runner.invoke(main, [*args, "--output", str(out)]).exit_code == 0
    out.write_text(out.read_text().replace("# Rendered", f"# old password was {NODE_SECRET}\n# Rendered"))
    result = runner.invoke(main, [*args, "--check", str(out)])
    assert result.exit_code == 1
    assert "only comments or layout differ" in result.stdout and "N0de" not in result.output


def test_registries_check_of_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    # A FIFO given to --check is one line and exit 2, never a wait for a writer that does not come.
    fifo = tmp_path / "registries.yaml"
    os.mkfifo(fifo)
    exe = Path(sys.executable).with_name("fractalops-release")
    result = subprocess.run(
        [str(exe), "--topology", str(TOPOLOGY), "topology", "render-registries", "--check", str(fifo)],
        env={**os.environ, "FRACTALOPS_NEXUS_PULL_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {fifo}: not a regular file"]
