"""Pure parts of the devstack: port layout, state dir, rendered configs, topology, exports, pidfiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from release import settings
from release.devstack import processes
from release.devstack.configs import (
    daemon_config,
    registry_config,
    render_exports,
    render_topology,
    stack_env,
)
from release.devstack.install import (
    ArchiveSource,
    Binaries,
    engine_sources_line,
    link_system_tools,
    parse_deb822_sources,
    parse_one_line_sources,
    private_apt_options,
)
from release.devstack.network import bridge_cidr, bridge_name
from release.devstack.paths import StackPaths, default_state_dir
from release.devstack.ports import DEFAULT_PORT_BASE, MIN_PORT_BASE, PortLayout, port_layout
from release.devstack.status import ComponentStatus, StackStatus, render_status
from release.errors import UsageError
from release.topology.load import load_topology

STATE = StackPaths(Path("/tmp/fx-state"))
PORTS = PortLayout(35080)


def test_default_ports_are_distinct_and_in_the_unusual_range(tmp_path: Path) -> None:
    # The default layout uses four distinct ports, all at or above the devstack's minimum base.
    from release.devstack.stack import resolve

    layout = resolve(tmp_path, settings.load({}).settings.devstack_port_base)[1]
    assert layout.base == DEFAULT_PORT_BASE
    assert len(set(layout.all_ports())) == 4
    assert min(layout.all_ports()) >= MIN_PORT_BASE


def test_port_base_setting_moves_every_port() -> None:
    # FRACTALOPS_DEVSTACK_PORT_BASE shifts the whole layout.
    base = settings.load({"FRACTALOPS_DEVSTACK_PORT_BASE": "36000"}).settings.devstack_port_base
    assert base is not None
    layout = port_layout(base)
    assert (layout.hosted, layout.pull_through, layout.upstream, layout.nexus_web) == (36000, 36001, 36002, 36003)


@pytest.mark.parametrize("raw", ["abc", "80", "70000", "8080", "30080"])
def test_bad_or_low_port_base_is_a_usage_error(raw: str) -> None:
    # A non-number or a base outside the devstack's range (low, well-known or too high) is refused.
    with pytest.raises(UsageError, match="FRACTALOPS_DEVSTACK_PORT_BASE"):
        _layout_from_setting(raw)


def _layout_from_setting(raw: str) -> PortLayout:
    """The layout `devstack up` uses when FRACTALOPS_DEVSTACK_PORT_BASE is `raw`."""
    base = settings.load({"FRACTALOPS_DEVSTACK_PORT_BASE": raw}, command="devstack up").settings.devstack_port_base
    return port_layout(base if base is not None else DEFAULT_PORT_BASE)


def test_state_dir_prefers_override_then_xdg_then_home() -> None:
    # The state dir comes from the override, else XDG_STATE_HOME, else ~/.local/state.
    def state_dir(environ: dict[str, str]) -> Path:
        loaded = settings.load(environ)
        return default_state_dir(loaded.settings.devstack_dir, loaded.context.state_home)

    assert state_dir({"FRACTALOPS_DEVSTACK_DIR": "/x/y", "XDG_STATE_HOME": "/s"}) == Path("/x/y")
    assert state_dir({"XDG_STATE_HOME": "/s"}) == Path("/s/fractalops-devstack")
    assert state_dir({"HOME": "/h"}) == Path("/h/.local/state/fractalops-devstack")


def test_daemon_config_isolates_the_engine_and_mirrors_docker_io() -> None:
    # The engine gets its own roots, socket and containerd, the containerd store, and the pull-through mirror.
    config = daemon_config(STATE, PORTS)
    assert config["features"] == {"containerd-snapshotter": True}
    assert config["registry-mirrors"] == ["http://127.0.0.1:35081"]
    assert config["hosts"] == ["unix:///tmp/fx-state/run/docker.sock"]
    assert config["containerd"] == "/tmp/fx-state/run/containerd.sock"
    for key in ("data-root", "exec-root", "pidfile"):
        assert str(config[key]).startswith("/tmp/fx-state/")
    assert config["bridge"] == bridge_name(PORTS)
    assert "/var/run/docker.sock" not in json.dumps(config)


def test_bridge_name_fits_interface_limit_and_subnet_is_private() -> None:
    # The bridge name is a valid interface name and its /24 is in 10.0.0.0/8.
    assert len(bridge_name(PortLayout(65000))) <= 15
    assert bridge_cidr(PORTS).startswith("10.")
    assert bridge_cidr(PORTS).endswith(".1/24")


def test_registry_configs_listen_on_loopback_and_only_pull_through_proxies() -> None:
    # Each registry listens on 127.0.0.1; only the pull-through one proxies the upstream.
    for role, port in (("hosted", 35080), ("pull-through", 35081), ("upstream", 35082)):
        config = registry_config(STATE, PORTS, role)
        assert config["http"]["addr"] == f"127.0.0.1:{port}"
        assert config["storage"]["filesystem"]["rootdirectory"] == f"/tmp/fx-state/registries/{role}"
        assert ("proxy" in config) == (role == "pull-through")
    assert registry_config(STATE, PORTS, "pull-through")["proxy"] == {"remoteurl": "http://127.0.0.1:35082"}


def test_topology_file_has_the_schema_keys_and_loads_with_the_release_model(tmp_path: Path) -> None:
    # The rendered topology has exactly the schema's keys and validates with the release model.
    text = render_topology(PORTS)
    data = YAML(typ="safe").load(text)
    assert set(data) == {"nexus", "registry_cache", "node_mirror", "release"}
    assert data["registry_cache"]["buildcache_ref"] == "127.0.0.1:35080/fractalops/buildcache"
    assert data["release"] == {"image_registry": "127.0.0.1:35080", "scheme": "http"}
    assert data["nexus"]["docker_group_port"] == 35081
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    topology = load_topology(path)
    assert topology.nexus.docker_internal_endpoint == "127.0.0.1:35080"


def test_exports_evaluate_in_a_shell_and_put_the_stack_client_first() -> None:
    # `eval` of the export lines sets DOCKER_HOST etc. and puts the stack's bin dir first on PATH.
    script = f'eval "$(cat <<\'EOF\'\n{render_exports(STATE)}EOF\n)"; echo "$DOCKER_HOST|$DOCKER_CONFIG|${{PATH%%:*}}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "unix:///tmp/fx-state/run/docker.sock|/tmp/fx-state/docker-config|/tmp/fx-state/bin"
    assert stack_env(STATE)["FRACTALOPS_TOPOLOGY"] == "/tmp/fx-state/topology.yaml"


def test_deb822_sources_yield_the_machine_archive_not_security() -> None:
    # The archive URI and keyring come from the stanza that serves the machine's suite.
    text = (
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Signed-By: /k.gpg\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    assert parse_deb822_sources(text, "bookworm") == ArchiveSource(
        uri="http://mirror.example/debian", signed_by="/usr/share/keyrings/debian-archive-keyring.gpg"
    )
    assert parse_deb822_sources(text, "trixie") is None


def test_one_line_sources_with_options_yield_the_archive() -> None:
    # A one-line sources.list entry with [signed-by=…] gives URI and keyring.
    text = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    assert parse_one_line_sources(text, "bookworm") == ArchiveSource("http://mirror.example/debian", "/k.gpg")


def test_private_apt_uses_only_its_own_sources_and_state() -> None:
    # The engine suite is fetched with a private sources list and state dir, never the system's.
    line = engine_sources_line(ArchiveSource("http://mirror.example/debian", "/k.gpg"), "trixie")
    assert line == "deb [signed-by=/k.gpg] http://mirror.example/debian trixie main\n"
    options = " ".join(private_apt_options(STATE))
    assert "Dir::State=/tmp/fx-state/apt/state" in options
    assert "Dir::Etc::SourceList=/tmp/fx-state/apt/sources.list" in options
    assert "Dir::Etc::SourceParts=/tmp/fx-state/apt/sources.list.d" in options
    assert "sid" not in line


def test_unpacked_engine_links_to_other_packages_files_point_at_the_systems(tmp_path: Path) -> None:
    # docker.io's docker-init is a relative link to tini-static (package tini): unpacked into a prefix it dangles,
    # so it is pointed at the system's; links that resolve, absolute ones and ones with no system file stay.
    prefix, system = tmp_path / "prefix", tmp_path / "system"
    (prefix / "usr" / "bin").mkdir(parents=True)
    (system / "usr" / "bin").mkdir(parents=True)
    (system / "usr" / "bin" / "tini-static").write_bytes(b"tini")
    (system / "usr" / "bin" / "tini-static").chmod(0o755)
    (prefix / "usr" / "bin" / "docker").write_bytes(b"docker")
    (prefix / "usr" / "bin" / "docker-init").symlink_to("tini-static")
    (prefix / "usr" / "bin" / "dockerd-alias").symlink_to("docker")
    (prefix / "usr" / "bin" / "absent").symlink_to("nowhere")
    assert link_system_tools(prefix, system) == ["docker-init"]
    assert (prefix / "usr" / "bin" / "docker-init").resolve() == system / "usr" / "bin" / "tini-static"
    assert str((prefix / "usr" / "bin" / "dockerd-alias").readlink()) == "docker"
    assert str((prefix / "usr" / "bin" / "absent").readlink()) == "nowhere"


def test_an_install_without_a_working_docker_init_is_not_complete(tmp_path: Path) -> None:
    # The engine's docker-init (beside the client) is one of the binaries: a dangling link makes the install run again.
    for name in ("dockerd", "docker", "buildx", "containerd", "registry", "busybox", "tini-static"):
        (tmp_path / name).write_bytes(b"")
        (tmp_path / name).chmod(0o755)
    binaries = Binaries(
        *(str(tmp_path / n) for n in ("dockerd", "docker", "buildx", "containerd", "registry", "busybox")), "/usr/bin"
    )
    (tmp_path / "docker-init").symlink_to("missing")
    assert binaries.missing() == [str(tmp_path / "docker-init")]
    (tmp_path / "docker-init").unlink()
    (tmp_path / "docker-init").symlink_to("tini-static")
    assert binaries.missing() == []


def test_status_is_unhealthy_when_any_component_is_down() -> None:
    # One component down makes the stack unhealthy, exit status 1, and the renderer names it.
    up = ComponentStatus("dockerd", running=True, healthy=True, pid=10, endpoint="unix:///s")
    down = ComponentStatus("registry-hosted", running=False, healthy=False, endpoint="127.0.0.1:35080")
    healthy = StackStatus(state_dir="/s", components=[up], installed=True)
    sick = StackStatus(state_dir="/s", components=[up, down], installed=True)
    assert healthy.exit_code == 0
    assert sick.exit_code == 1
    assert "unhealthy: registry-hosted" in render_status(sick)
    assert "DOWN" in render_status(sick)


def test_pidfile_process_is_started_tracked_and_stopped(tmp_path: Path) -> None:
    # A component started through its pidfile is seen running, and stop ends it and removes the pidfile.
    paths = StackPaths(tmp_path)
    started = processes.start(paths, "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert processes.running(paths, "sleeper") == started
    assert processes.stop(paths, "sleeper", timeout=5.0) == started.pid
    assert processes.running(paths, "sleeper") is None
    assert not paths.pidfile("sleeper").exists()


def test_stale_pidfile_is_not_taken_for_a_running_process(tmp_path: Path) -> None:
    # A pidfile whose start time does not match the live process counts as not running.
    paths = StackPaths(tmp_path)
    paths.run.mkdir(parents=True)
    paths.pidfile("ghost").write_text("1 0\n")
    assert processes.running(paths, "ghost") is None


def test_down_and_status_act_on_the_port_base_the_stack_recorded_not_the_exported_one(tmp_path: Path) -> None:
    # An exported FRACTALOPS_DEVSTACK_PORT_BASE never aims down/status at another stack's ports; up still takes it.
    from release.devstack.stack import resolve

    (tmp_path / "stack.json").write_text(json.dumps({"port_base": 36550}) + "\n")
    exported = settings.load({"FRACTALOPS_DEVSTACK_PORT_BASE": "37550"}).settings.devstack_port_base
    assert resolve(tmp_path, exported, existing=True)[1].base == 36550
    assert resolve(tmp_path, exported)[1].base == 37550
    assert resolve(tmp_path / "fresh", exported, existing=True)[1].base == 37550
    assert resolve(tmp_path / "fresh", None)[1].base == DEFAULT_PORT_BASE


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _commands_run_by_the_devstack(pattern: str = "*.py") -> set[str]:
    """Every program name the devstack modules pass as the first element of a command list (inside a host, too)."""
    import ast

    names: set[str] = set()
    for module in (Path(__file__).resolve().parents[2] / "release" / "devstack").glob(pattern):
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.Call):
                continue
            callee = ast.unparse(node.func).split(".")[-1]
            argv = None
            if callee in {"run", "Popen", "check_output"} and node.args:
                argv = node.args[0]
            elif callee in {"in_netns", "daemon_in_netns"} and len(node.args) > 1:
                argv = node.args[1]
            first = argv.elts[0] if isinstance(argv, ast.List) and argv.elts else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
    return names


def _owning_packages(command: str) -> set[str]:
    """The Debian packages that ship the command found on the system PATH."""
    import shutil

    found = shutil.which(command, path=SYSTEM_PATH)
    assert found, f"{command} is not installed here"
    owner = subprocess.run(["dpkg", "-S", str(Path(found).resolve())], capture_output=True, text=True)
    if owner.returncode != 0:  # usrmerge: dpkg knows /bin/umount, not /usr/bin/umount
        owner = subprocess.run(["dpkg", "-S", f"/bin/{command}", f"/sbin/{command}"], capture_output=True, text=True)
    return {line.split(":", 1)[0].strip() for line in owner.stdout.splitlines() if ":" in line}


def test_every_command_the_devstack_runs_comes_from_a_package_it_installs() -> None:
    # A minimal Debian root (mmdebstrap --variant=apt) has only apt and dpkg: umount, ip, … must be installed by up.
    import shutil

    from release.devstack.install import BASE_PACKAGES
    from release.devstack.packages import SEED_TOOLS

    commands = _commands_run_by_the_devstack()
    assert {"ip", "umount", "mmdebstrap"} <= commands, commands
    for command in sorted(commands - {"apt-get", "apt-cache", "dpkg", "dpkg-query"}):
        if command in SEED_TOOLS and shutil.which(command) is None:
            continue  # a package of that name `up` installs before it seeds (not there on a fresh machine yet)
        packages = _owning_packages(command)
        assert packages & {*BASE_PACKAGES, *SEED_TOOLS}, (
            f"{command} comes from {packages or 'no package'}, not installed by up"
        )


def test_every_command_the_cluster_shape_runs_comes_from_a_package_it_installs() -> None:
    # The cluster shape also runs dnsmasq (its DNS server) inside the nexus host: `up --shape cluster` installs it.
    import shutil

    from release.devstack.install import BASE_PACKAGES, CLUSTER_PACKAGES
    from release.devstack.packages import SEED_TOOLS

    commands = _commands_run_by_the_devstack("cluster/*.py")
    assert {"ip", "tc", "dnsmasq"} <= commands, commands
    # docker: the engine's own client (ENGINE_PACKAGES, unpacked into the state dir on Debian 12); sh: essential.
    essential = {"coreutils"}  # `cat` of a host's /proc: in every Debian root (Essential: yes)
    for command in sorted(commands - {"docker", "sh"}):
        if command == "dnsmasq" and shutil.which(command, path=SYSTEM_PATH) is None:
            continue  # installed by the first `up --shape cluster` (not there on a fresh machine yet)
        packages = _owning_packages(command)
        assert packages & {*BASE_PACKAGES, *SEED_TOOLS, *CLUSTER_PACKAGES, *essential}, (
            f"{command} comes from {packages or 'no package'}, not installed by up --shape cluster"
        )
