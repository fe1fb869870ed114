"""The topology model: the committed file validates, bad files give exit-2 errors naming the field."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from release.cli import main
from release.errors import ConfigError
from release.topology import load_topology
from release.topology.load import parse_topology

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "ops/topology/fractalops.yaml"


def _data() -> dict[str, Any]:
    return YAML(typ="safe").load(TOPOLOGY.read_text())


def test_committed_topology_describes_nexus() -> None:
    # The committed topology loads and points every cache role at Nexus.
    topo = load_topology(TOPOLOGY)
    assert topo.nexus.cluster_host == "nexus.nexus.svc"
    assert topo.registry_cache.buildcache_ref == "nexus.nexus.svc:8082/fractalops/buildcache"
    assert topo.docker_group_url == "http://nexus.nexus.svc:8083"
    assert topo.node_mirror_endpoint == "http://127.0.0.1:30083"
    assert topo.node_mirror.pull_username == "shim-puller"
    assert topo.builder is not None and topo.builder.endpoint == "tcp://buildkit.fractalops.svc:1234"


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data[key]
    if value is _DELETE:
        del data[keys[-1]]
    else:
        data[keys[-1]] = value


_DELETE = object()

INVALID = [
    ("nexus.web_port", 0, "nexus.web_port"),
    ("nexus.docker_group_port", 70000, "nexus.docker_group_port"),
    ("nexus.docker_internal_port", "8082", "nexus.docker_internal_port"),
    ("registry_cache.host_ip", "nexus.example", "registry_cache.host_ip"),
    ("registry_cache.host_ip", "10.43.1", "registry_cache.host_ip"),
    ("registry_cache.buildcache_ref", "not a ref", "registry_cache.buildcache_ref"),
    (
        "registry_cache.buildcache_ref",
        "nexus.nexus.svc:8082/fractalops/buildcache:latest",
        "registry_cache.buildcache_ref",
    ),
    ("registry_cache.buildcache_ref", "nexus.nexus.svc:8083/fractalops/buildcache", "registry_cache.buildcache_ref"),
    ("registry_cache.docker_proxy_port", 8084, "registry_cache.docker_proxy_port"),
    ("registry_cache.ghcr_proxy_port", 8082, "registry_cache.ghcr_proxy_port"),
    ("registry_cache.extra_key", "x", "registry_cache.extra_key"),
    ("registry_cache.host_ip", "10.10.10.150", "folded into Nexus on 2026-06-18"),
    ("registry_cache.lxc", {"vmid": 113}, "folded into Nexus on 2026-06-18"),
    ("node_mirror.host", "nexus.nexus.svc", "node_mirror.host"),
    ("node_mirror.password", "hunter2", "node_mirror.password"),
    ("node_mirror.mode", "hostport", "node_mirror.mode"),
    ("nexus.service", "Nexus_Svc", "nexus.service"),
    ("nexus.public_url", "nexus.yamon.io", "nexus.public_url"),
    ("nexus", _DELETE, "nexus"),
    ("release", None, "release: None: want a mapping"),
    ("builder.endpoint", "https://buildkit.fractalops.svc:1234", "builder.endpoint: 'https://"),
    ("builder.endpoint", "buildkit.fractalops.svc:1234", "must be a tcp:// address"),
    (
        "builder.endpoint",
        "tcp://buildkit.fractalops.svc",
        "builder.endpoint: 'tcp://buildkit.fractalops.svc': has no port",
    ),
    ("builder.endpoint", "tcp://buildkit.fractalops.svc:", "has no port"),
    ("builder.endpoint", "tcp://buildkit.fractalops.svc:70000", "builder.endpoint"),
    ("builder.endpoint", "tcp://buildkit.fractalops.svc:1234/x", "has a path"),
    ("builder.endpoint", "tcp://build_kit:1234", "has no valid host"),
    ("builder.endpoint", 1234, "builder.endpoint"),
    ("builder.endpoint", "tcp://10.10.10.150:1234", "builder.endpoint: 'tcp://10.10.10.150:1234' is the retired"),
    ("builder.endpoint", "tcp://ct113:1234", "folded into Nexus on 2026-06-18"),
    ("builder.tls_servername", "buildkit fractalops", "builder.tls_servername"),
    ("builder.driver", "remote", "builder.driver"),
    ("builder", "tcp://buildkit.fractalops.svc:1234", "builder: 'tcp://buildkit.fractalops.svc:1234': want a mapping"),
]


@pytest.mark.parametrize(("field", "value", "named"), INVALID, ids=[f"{f}={v!r}" for f, v, _ in INVALID])
def test_invalid_topology_exits_2_naming_the_field(tmp_path: Path, field: str, value: Any, named: str) -> None:
    # Each kind of invalid topology exits 2 with one line naming the file and the field.
    data = copy.deepcopy(_data())
    _set(data, field, value)
    bad = tmp_path / "topology.yaml"
    YAML().dump(data, bad)
    result = CliRunner().invoke(main, ["--topology", str(bad), "topology", "render-env"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0]
    assert named in lines[0]
    assert "Traceback" not in result.output


def test_unparseable_yaml_names_the_line(tmp_path: Path) -> None:
    # A file that is not YAML is a configuration error naming the file and line.
    bad = tmp_path / "t.yaml"
    bad.write_text("nexus:\n  service: [unclosed\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: line \d+: not valid YAML"):
        load_topology(bad)


def test_missing_topology_file_is_a_config_error(tmp_path: Path) -> None:
    # A topology path that does not exist is exit 2, not a traceback.
    result = CliRunner().invoke(main, ["--topology", str(tmp_path / "nope.yaml"), "topology", "show"])
    assert result.exit_code == 2
    assert "cannot read the topology" in result.stderr


@pytest.mark.parametrize(
    ("endpoint", "host", "port"),
    [
        ("tcp://buildkit.fractalops.svc:1234", "buildkit.fractalops.svc", 1234),
        ("tcp://10.0.0.9:1234", "10.0.0.9", 1234),
        ("tcp://[fd00::9]:4321", "fd00::9", 4321),
    ],
)
def test_builder_endpoint_is_a_tcp_host_and_port(endpoint: str, host: str, port: int) -> None:
    # The shared BuildKit is reached at tcp://HOST:PORT: a host name or an address (IPv6 in brackets).
    data = _data()
    data["builder"] = {"endpoint": endpoint}
    builder = parse_topology(data, "t").builder
    assert builder is not None and (builder.host, builder.port) == (host, port)
    assert builder.server_name == host  # buildx checks the endpoint's host unless tls_servername says otherwise


def test_builder_section_is_optional() -> None:
    # A topology without a shared BuildKit is valid; builders then give their endpoint by hand.
    data = _data()
    del data["builder"]
    assert parse_topology(data, "t").builder is None


def test_clusterip_node_mirror_uses_the_clusterip() -> None:
    # The kube-proxy alternative reaches the docker-group through the ClusterIP.
    data = _data()
    data["node_mirror"] = {"mode": "clusterip", "pull_username": "shim-puller"}
    topo = parse_topology(data, "t")
    assert topo.node_mirror_endpoint == f"http://{topo.registry_cache.host_ip}:8083"


def test_debug_flag_shows_the_traceback_and_keeps_the_exit_code(tmp_path: Path) -> None:
    # --debug prints the traceback of the project's error, and still exits with its code (2 for configuration).
    result = CliRunner().invoke(main, ["--debug", "--topology", str(tmp_path / "x.yaml"), "topology", "show"])
    assert result.exit_code == ConfigError.exit_code == 2
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_check_with_the_local_stacks_topology_scans_against_the_committed_one(tmp_path: Path) -> None:
    # The local stack's loopback topology is valid; its stand-in ports are not production addresses to hunt for.
    from release.devstack.configs import render_topology
    from release.devstack.ports import port_layout

    local = tmp_path / "topology.yaml"
    local.write_text(render_topology(port_layout(35080)))
    root = Path(__file__).resolve().parents[2]
    result = CliRunner().invoke(main, ["--topology", str(local), "topology", "check", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "is a loopback stand-in; scanning with ops/topology/fractalops.yaml" in result.stderr


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed command in a child process (a hang fails the test at `timeout` instead of blocking the suite)."""
    exe = Path(sys.executable).with_name("fractalops-release")
    env = {k: v for k, v in os.environ.items() if k != "FRACTALOPS_TOPOLOGY"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# Nine levels of nine aliases each: under 600 bytes, 9**9 leaves once expanded.
ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_alias_bomb_topology_is_refused_at_once(tmp_path: Path) -> None:
    # A few hundred bytes of nested aliases are refused (anchors and aliases are not allowed) within seconds.
    bomb = tmp_path / "topology.yaml"
    bomb.write_text("nexus:\n  service: nexus\n" + ALIAS_BOMB)
    assert len(bomb.read_bytes()) < 700
    line = _one_line_exit_2(_cli("--topology", str(bomb), "topology", "render-env", timeout=30), str(bomb))
    assert "anchor" in line or "alias" in line
    assert "line 3" in line


def test_anchor_in_topology_is_refused_naming_the_line(tmp_path: Path) -> None:
    # Even a harmless anchor and alias are refused: a configuration file spells every value out.
    text = TOPOLOGY.read_text().replace("  service: nexus\n", "  service: &svc nexus\n", 1)
    text = text.replace("  namespace: nexus\n", "  namespace: *svc\n", 1)
    bad = tmp_path / "topology.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"topology\.yaml: line \d+: .*anchor") as caught:
        load_topology(bad)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nexus.service", "X" * 2_000_000),
        ("nexus", [{f"key{i}": "v" * 200 for i in range(50)} for _ in range(200)]),
        ("node_mirror.mode", {"k" * 100_000: 1}),
    ],
    ids=["long-string", "whole-section", "long-key"],
)
def test_huge_value_in_an_error_is_shown_cut_short(tmp_path: Path, field: str, value: Any) -> None:
    # An error names the field and shows at most a short prefix of a huge value, on one short line.
    data = _data()
    _set(data, field, value)
    bad = tmp_path / "topology.yaml"
    YAML(typ="safe", pure=True).dump(data, bad)
    assert bad.stat().st_size > 100_000
    line = _one_line_exit_2(_cli("--topology", str(bad), "topology", "render-env"), str(bad), field)
    assert len(line) < 400


def test_deeply_nested_topology_is_one_line_naming_the_file(tmp_path: Path) -> None:
    # Thousands of nested brackets end in a one-line configuration error, not a RecursionError traceback.
    bad = tmp_path / "topology.yaml"
    bad.write_text("nexus: " + "[" * 5000 + "]" * 5000 + "\n")
    line = _one_line_exit_2(_cli("--topology", str(bad), "topology", "render-env"), str(bad))
    assert "nest" in line


def test_non_utf8_topology_is_one_line_naming_the_file(tmp_path: Path) -> None:
    # Bytes that are not UTF-8 end in a one-line configuration error naming the file, not a UnicodeDecodeError.
    bad = tmp_path / "topology.yaml"
    bad.write_bytes(TOPOLOGY.read_bytes().replace(b"service: nexus", b"service: nex\xffus", 1))
    line = _one_line_exit_2(_cli("--topology", str(bad), "topology", "render-env"), str(bad))
    assert "UTF-8" in line


def test_fifo_as_topology_is_refused_without_waiting(tmp_path: Path) -> None:
    # A named pipe given as the topology is refused at once (no writer would ever come), like any non-regular file.
    fifo = tmp_path / "topology.yaml"
    os.mkfifo(fifo)
    line = _one_line_exit_2(_cli("--topology", str(fifo), "topology", "render-env", timeout=20), str(fifo))
    assert "not a regular file" in line
    folder = _one_line_exit_2(_cli("--topology", str(tmp_path), "topology", "render-env", timeout=20), str(tmp_path))
    assert "not a regular file" in folder or "is a directory" in folder  # click's own check of --topology


@pytest.mark.parametrize(
    ("field", "value"),
    [("nexus.service", "nexus\n"), ("nexus.public_url", "https://nexus.yamon.io\n")],
)
def test_topology_value_with_a_trailing_newline_is_refused(field: str, value: str) -> None:
    # Validators match the whole value: a trailing newline is not a valid DNS label or URL.
    data = _data()
    _set(data, field, value)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_topology(data, "t")


def test_unsupported_yaml_version_in_topology_is_one_line(tmp_path: Path) -> None:
    # A `%YAML 1.3` directive (ruamel.yaml asserts on it) is one line, exit 2, naming the file.
    bad = tmp_path / "topology.yaml"
    bad.write_text("%YAML 1.3\n---\n" + TOPOLOGY.read_text())
    assert "not valid YAML" in _one_line_exit_2(_cli("--topology", str(bad), "topology", "render-env"), str(bad))
