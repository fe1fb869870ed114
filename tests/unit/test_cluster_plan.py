"""Pure parts of the devstack's cluster shape: names and addresses, topology, engine config, credentials, links, seed image."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import ipaddress
import json
import stat
import struct
import tarfile
from pathlib import Path

import bcrypt
import pytest
from click.testing import CliRunner

from release.cli import main
from release.devstack.buildkit_certs import cert_paths, render_certs
from release.devstack.cluster import buildkit_host, delay, dns, web
from release.devstack.cluster.credentials import (
    BCRYPT_ROUNDS,
    Credentials,
    credentials_file,
    ensure_credentials,
    htpasswd_matches,
    write_htpasswd,
)
from release.devstack.cluster.execute import command_env, host_env
from release.devstack.cluster.hosts import HOST_NAMES, ClusterNet, render_hosts_file, restore_cgroups_script
from release.devstack.cluster.links import (
    LinkShape,
    burst_bytes,
    delay_rules,
    loss_rules,
    next_silence_number,
    parse_delay,
    parse_loss,
    parse_silence,
    rate_bytes,
    read_shapes,
    silence_rules,
    tbf_args,
)
from release.devstack.cluster.nexus import connectors, registry_config
from release.devstack.cluster.oci import gunzipped_sha256, gzip_layer_image, layer_tar, one_layer_image, sha256
from release.devstack.cluster.paths import ClusterPaths
from release.devstack.cluster.runners import daemon_config
from release.devstack.cluster.topology import (
    cluster_topology,
    host_names,
    production_topology,
    render_cluster_topology,
)
from release.devstack.install import Binaries
from release.devstack.paths import StackPaths
from release.errors import ConfigError, UsageError
from release.topology.load import load_topology
from release.topology.model import Builder, Topology

REPO = Path(__file__).resolve().parents[2]
NET = ClusterNet(39680)

HYBRID_MOUNTINFO = """\
30 23 0:26 / /sys rw,relatime shared:7 - sysfs sysfs rw
31 30 0:27 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
32 31 0:28 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
33 31 0:29 / /sys/fs/cgroup/systemd rw,relatime shared:10 - cgroup cgroup rw,name=systemd
34 31 0:30 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
"""
UNIFIED_MOUNTINFO = (
    "28 23 0:25 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
)


def test_every_name_of_a_stack_carries_its_port_base_and_fits_the_kernel_limits() -> None:
    # Namespaces and the root-side link are prefixed per stack; an interface name has at most 15 characters.
    names = NET.namespaces()
    assert names == [f"fx39680-{h}" for h in HOST_NAMES] + ["fx39680-hub"]
    assert len(NET.root_link) <= 15
    assert all(len(h.hub_link) <= 15 for h in NET.hosts())


def test_two_port_bases_give_two_disjoint_networks() -> None:
    # Two stacks (different port bases) get different namespaces and different subnets, so both can run.
    other = ClusterNet(39690)
    assert not set(other.namespaces()) & set(NET.namespaces())
    assert not other.subnet.overlaps(NET.subnet)


def test_hosts_have_distinct_addresses_inside_the_subnet() -> None:
    # Every host and the root link get a distinct address on the stack's private /24.
    addresses = [h.address for h in NET.hosts()] + [NET.root_address]
    assert len(set(addresses)) == len(addresses)
    assert NET.subnet.is_private
    assert all(ipaddress.ip_address(a) in NET.subnet for a in addresses)


def test_an_unknown_host_is_a_usage_error_naming_the_hosts() -> None:
    # --host with a name the shape does not have is exit 2 and lists the hosts.
    with pytest.raises(UsageError, match="runner-1, runner-2") as caught:
        NET.host("runner-3")
    assert caught.value.exit_code == 2


def _with_builder(production: Topology, endpoint: str, servername: str | None = None) -> Topology:
    """The production topology with another shared BuildKit entry."""
    return production.model_copy(update={"builder": Builder(endpoint=endpoint, tls_servername=servername)})


def test_hosts_file_resolves_the_nexus_service_and_the_builder() -> None:
    # Each host's /etc/hosts names the Nexus service and the shared builder (the topology's name) at their addresses.
    topology = cluster_topology(production_topology(REPO), NET.host("nexus").address)
    assert topology.builder is not None
    text = render_hosts_file(host_names(topology, NET.host("nexus").address, NET.host("builder").address))
    assert f"{NET.host('nexus').address}\tnexus.nexus.svc" in text.splitlines()
    assert f"{NET.host('builder').address}\t{topology.builder.host}" in text.splitlines()
    assert "127.0.0.1\tlocalhost" in text.splitlines()


def test_builder_records_follow_the_topologys_builder_name() -> None:
    # Another name in the production file's builder section is the name the hosts file and the cluster DNS give out.
    production = _with_builder(production_topology(REPO), "tcp://bk.ci.svc:4321")
    nexus, builder = NET.host("nexus").address, NET.host("builder").address
    names = host_names(cluster_topology(production, nexus), nexus, builder)
    assert names == {"nexus.nexus.svc": nexus, "bk.ci.svc": builder}
    assert f"{builder}\tbk.ci.svc" in render_hosts_file(names).splitlines()
    assert f"host-record=bk.ci.svc,{builder}" in dns.render_config(names, nexus).splitlines()
    assert not [name for name in names if "buildkit.fractalops.svc" in name]


@pytest.mark.parametrize(
    ("mountinfo", "wanted"),
    [
        (HYBRID_MOUNTINFO, ["-t tmpfs -o rw,mode=755 tmpfs /sys/fs/cgroup", "-t cgroup -o rw,cpu cgroup /sys/fs/cgroup/cpu",
                            "-t cgroup2 -o rw cgroup2 /sys/fs/cgroup/unified"]),
        (UNIFIED_MOUNTINFO, ["-t cgroup2 -o rw,nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup"]),
    ],
)  # fmt: skip
def test_cgroup_mounts_are_restored_parents_first_under_the_namespace_sysfs(mountinfo: str, wanted: list[str]) -> None:
    # The engine's wrapper mounts the machine's cgroup hierarchies again (a v1 hybrid or a unified one), then execs.
    script = restore_cgroups_script(mountinfo)
    mounts = [line.split("mount ", 1)[1] for line in script.splitlines() if " mount -t" in line]
    assert all(any(m.startswith(w) for m in mounts) for w in wanted)
    assert mounts[0].endswith(" /sys/fs/cgroup")
    assert script.splitlines()[-1] == 'exec "$@"'
    assert "/sys " not in script  # the namespace's own sysfs stays


def test_cluster_topology_keeps_production_names_and_ports_and_changes_only_addresses() -> None:
    # Service name, connector ports, build cache repository: production's; the ClusterIP is the nexus host's address.
    production = production_topology(REPO)
    address = NET.host("nexus").address
    topology = cluster_topology(production, address)
    assert topology.nexus.cluster_host == production.nexus.cluster_host == "nexus.nexus.svc"
    assert (topology.nexus.docker_internal_port, topology.nexus.docker_group_port, topology.nexus.web_port) == (
        8082,
        8083,
        8081,
    )
    assert topology.registry_cache.buildcache_ref == "nexus.nexus.svc:8082/fractalops/buildcache"
    assert topology.registry_cache.host_ip == address != production.registry_cache.host_ip
    assert topology.release.image_registry == "nexus.nexus.svc:8082"
    assert topology.registry_scheme("nexus.nexus.svc:8082") == "http"


def test_cluster_topology_carries_the_production_builder_section(tmp_path: Path) -> None:
    # The shared BuildKit keeps its production name and port in the file the shape writes (its address differs).
    production = production_topology(REPO)
    path = tmp_path / "topology.yaml"
    path.write_text(render_cluster_topology(production, "10.214.128.2"))
    written = load_topology(path)
    assert written.builder == production.builder
    assert written.builder is not None and written.builder.endpoint == "tcp://buildkit.fractalops.svc:1234"
    assert "tls_servername" not in path.read_text()  # unset values are left out, as in the production file
    named = _with_builder(production, "tcp://bk.ci.svc:4321", "buildkit.ci.svc")
    assert cluster_topology(named, "10.214.128.2").builder == named.builder


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (None, "builder: the cluster shape runs the shared BuildKit under the topology's builder.endpoint"),
        (Builder(endpoint="tcp://10.0.0.9:1234"), "name the builder by a host name, not an address"),
    ],
)
def test_cluster_shape_needs_a_named_builder_in_the_production_topology(builder: Builder | None, message: str) -> None:
    # No builder section, or one at a bare address, cannot give the shape a name to keep: exit 2 naming the file.
    production = production_topology(REPO).model_copy(update={"builder": builder})
    with pytest.raises(ConfigError, match=message) as caught:
        cluster_topology(production, "10.214.128.2")
    assert str(caught.value).startswith("ops/topology/fractalops.yaml: builder")
    assert caught.value.exit_code == 2


def test_builder_certificate_names_the_topologys_server_name_endpoint_host_and_address() -> None:
    # buildkitd's certificate carries what clients check: builder.tls_servername, the endpoint's host, the address.
    production = production_topology(REPO)
    assert buildkit_host.server_names(cluster_topology(production, "10.214.128.2"), "10.214.128.3") == [
        "buildkit.fractalops.svc",
        "10.214.128.3",
    ]
    named = cluster_topology(_with_builder(production, "tcp://bk.ci.svc:4321", "buildkit.ci.svc"), "10.214.128.2")
    assert buildkit_host.server_names(named, "10.214.128.3") == ["buildkit.ci.svc", "bk.ci.svc", "10.214.128.3"]
    assert buildkit_host.endpoint(named) == "tcp://bk.ci.svc:4321"


def test_runner_builder_create_takes_the_endpoint_from_the_shapes_topology(tmp_path: Path) -> None:
    # The runners' `builder create` names no endpoint: run as a dry run, it gives buildx the topology's builder.
    production = _with_builder(production_topology(REPO), "tcp://bk.ci.svc:4321")
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(render_cluster_topology(production, "10.214.128.2"))
    folder = StackPaths(tmp_path / "builder")
    render_certs(buildkit_host.layout(folder).certs, ["bk.ci.svc"])
    argv = buildkit_host.create_command(folder)
    assert "--endpoint" not in argv and "--tls-servername" not in argv
    result = CliRunner().invoke(main, [*argv[3:], "--dry-run"], env={"FRACTALOPS_TOPOLOGY": str(topology_file)})
    assert result.exit_code == 0, result.output
    wanted = f"--driver remote --driver-opt {_client_opt(folder)} --bootstrap tcp://bk.ci.svc:4321"
    assert result.stdout.splitlines()[0].endswith(wanted)


def _client_opt(folder: StackPaths) -> str:
    """The driver option of the shared builder's client TLS files."""
    client = cert_paths(buildkit_host.layout(folder).certs).client
    return f"cacert={client.ca_cert},cert={client.cert},key={client.key}"


def test_rendered_cluster_topology_loads_as_the_same_model(tmp_path: Path) -> None:
    # The file `up --shape cluster` writes is a valid topology equal to the model it was made from.
    production = production_topology(REPO)
    path = tmp_path / "topology.yaml"
    path.write_text(render_cluster_topology(production, "10.214.128.2"))
    assert load_topology(path) == cluster_topology(production, "10.214.128.2")


def test_runner_daemon_json_trusts_exactly_the_plain_http_connectors(tmp_path: Path) -> None:
    # registry-mirrors is the group connector; insecure-registries are the topology's connectors, nothing more.
    topology = cluster_topology(production_topology(REPO), "10.214.128.2")
    folder = StackPaths(tmp_path / "runner-1")
    config = daemon_config(folder, topology)
    assert config["registry-mirrors"] == ["http://nexus.nexus.svc:8083"]
    assert sorted(config["insecure-registries"]) == sorted(
        ["nexus.nexus.svc:8082", "nexus.nexus.svc:8083", "10.214.128.2:8082", "10.214.128.2:8083"]
    )
    assert config["hosts"] == [f"unix://{folder.docker_socket}"]
    assert config["data-root"].startswith(str(tmp_path)) and config["exec-root"].startswith(str(tmp_path))
    assert "containerd" not in config  # the engine starts its own, in its mount namespace
    assert config["features"] == {"containerd-snapshotter": True}


def test_nexus_connectors_ask_for_credentials_and_the_group_proxies_the_upstream(tmp_path: Path) -> None:
    # Hosted and group use htpasswd on the topology's ports; the upstream (docker.io stand-in) does not.
    topology = cluster_topology(production_topology(REPO), "10.214.128.2")
    host = NET.host("nexus")
    made = {c.role: registry_config(c, host, tmp_path, tmp_path / "htpasswd") for c in connectors(topology, host)}
    assert made["hosted"]["http"]["addr"] == f"{host.address}:8082"
    assert made["group"]["http"]["addr"] == f"{host.address}:8083"
    assert (
        made["hosted"]["auth"]
        == made["group"]["auth"]
        == {"htpasswd": {"realm": "nexus", "path": str(tmp_path / "htpasswd")}}
    )
    assert "auth" not in made["upstream"]
    assert made["group"]["proxy"] == {"remoteurl": f"http://{host.address}:5000"}
    assert not made["hosted"]["http"]["addr"].startswith("127.")


def test_credentials_are_generated_once_in_owner_only_files(tmp_path: Path) -> None:
    # The first call makes a random password in a 0600 file in a 0700 folder; later calls return the same one.
    first = ensure_credentials(tmp_path / "secrets")
    again = ensure_credentials(tmp_path / "secrets")
    assert first == again and len(first.password) >= 32
    assert stat.S_IMODE(credentials_file(tmp_path / "secrets").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert first.password not in repr(first)


def test_htpasswd_is_bcrypt_and_rewritten_only_for_other_credentials(tmp_path: Path) -> None:
    # The registries' file holds one bcrypt entry; the same credentials leave it alone, new ones replace it.
    path = tmp_path / "htpasswd"
    creds = Credentials("ci", "s3cret-password")
    assert write_htpasswd(path, creds)
    user, _, hashed = path.read_text().strip().partition(":")
    assert user == "ci" and hashed.startswith("$2") and bcrypt.checkpw(b"s3cret-password", hashed.encode())
    assert hashed.split("$")[2] == f"{BCRYPT_ROUNDS:02d}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not write_htpasswd(path, creds)
    assert write_htpasswd(path, Credentials("ci", "another-password"))
    assert not htpasswd_matches(path.read_text(), creds)


@pytest.mark.parametrize(("rate", "per_second"), [("5mbit", 625_000), ("800kbit", 100_000), ("100kbps", 100_000)])
def test_rates_are_read_in_tc_units(rate: str, per_second: float) -> None:
    # tc's rate syntax: bits or bytes per second with k, m, g in powers of 1000.
    assert rate_bytes(rate) == per_second


@pytest.mark.parametrize("rate", ["fast", "5", "0mbit", "-1mbit", "5 mbit"])
def test_a_rate_tc_cannot_read_is_a_usage_error(rate: str) -> None:
    # A rate without a unit, zero or not a number is exit 2 naming the value.
    with pytest.raises(UsageError, match="--rate"):
        rate_bytes(rate)


def test_tbf_bucket_covers_twenty_milliseconds_and_never_less_than_32k() -> None:
    # The bucket is 20 ms at the rate (a 1 gbit link: 2.5 MB), and at least 32 KiB on slow links.
    assert burst_bytes("100kbps") == 32 * 1024
    assert burst_bytes("1gbit") == 2_500_000
    assert tbf_args("5mbit")[:4] == ["tbf", "rate", "5mbit", "burst"]


@pytest.mark.parametrize(("text", "percent"), [("1%", 1.0), ("0.5", 0.5), ("0", 0.0)])
def test_loss_is_a_percentage(text: str, percent: float) -> None:
    # --loss takes a percentage with or without the sign.
    assert parse_loss(text) == percent


@pytest.mark.parametrize("text", ["100", "150%", "-1", "one"])
def test_a_loss_outside_zero_to_a_hundred_is_a_usage_error(text: str) -> None:
    # A loss of 100 % or more (or not a number) is refused with exit 2.
    with pytest.raises(UsageError, match="--loss"):
        parse_loss(text)


def test_loss_becomes_one_statistic_drop_rule_and_none_for_zero() -> None:
    # 1 % loss is iptables' random statistic match with probability 0.01; no loss is no rule.
    assert loss_rules(1.0) == [
        ["-A", "FX-LINK-LOSS", "-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP"]
    ]
    assert loss_rules(0) == []
    assert LinkShape(rate="5mbit", loss=1).describe() == "rate 5mbit, loss 1%"
    assert LinkShape().describe() == "unshaped"


def test_seed_layer_is_reproducible_and_holds_parent_folders() -> None:
    # The same files give the same tar bytes; folders come before their files; symlinks keep their target.
    files, links = {"bin/busybox": b"\x7fELF"}, {"bin/sh": "/bin/busybox", "usr/bin/env": "/bin/busybox"}
    tar = layer_tar(files, links, executable=("bin/busybox",))
    assert tar == layer_tar(files, links, executable=("bin/busybox",))
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert list(members)[:3] == ["bin", "usr", "usr/bin"]
    assert members["usr/bin/env"].issym() and members["usr/bin/env"].linkname == "/bin/busybox"
    assert members["bin/busybox"].mode == 0o755


def test_seed_image_manifest_names_its_config_and_layer_by_digest() -> None:
    # The manifest's digests match the config and the gzip layer; diff_ids name the uncompressed tar.
    tar = layer_tar({"bin/busybox": b"x"}, {})
    image = one_layer_image(tar, cmd=["/bin/sh"])
    manifest = json.loads(image.manifest)
    assert manifest["config"]["digest"] == sha256(image.config)
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(image.layers[0])]
    assert json.loads(image.config)["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar).hexdigest()]
    assert gzip.decompress(image.layers[0]) == tar
    assert image.digest == sha256(image.manifest)


def test_debian_image_is_the_gzipped_rootfs_as_its_layer_named_by_its_uncompressed_digest(tmp_path: Path) -> None:
    # The seeded rootfs tarball goes up as it is (no recompression); its diff_id is the digest of the plain tar.
    tar = layer_tar({"etc/debian_version": b"13.1\n"}, {})
    rootfs = tmp_path / "debian-trixie-slim.tar.gz"
    rootfs.write_bytes(gzip.compress(tar, mtime=0))
    image = gzip_layer_image(rootfs.read_bytes(), gunzipped_sha256(rootfs), cmd=["bash"], created_by="mmdebstrap")
    config = json.loads(image.config)
    assert image.layers == (rootfs.read_bytes(),)
    assert config["rootfs"]["diff_ids"] == [sha256(tar)]
    assert config["config"]["Cmd"] == ["bash"] and config["history"] == [{"created_by": "mmdebstrap"}]
    assert json.loads(image.manifest)["layers"][0]["digest"] == sha256(rootfs.read_bytes())


def test_cluster_dns_answers_only_the_shapes_names_on_the_nexus_host_and_never_asks_upstream() -> None:
    # dnsmasq listens on the nexus host's address only, reads no resolv.conf or /etc/hosts, and knows the topology's names.
    nexus, builder = NET.host("nexus").address, NET.host("builder").address
    topology = cluster_topology(production_topology(REPO), nexus)
    lines = dns.render_config(host_names(topology, nexus, builder), nexus).splitlines()
    assert {"no-resolv", "no-hosts", "bind-interfaces", "keep-in-foreground", f"listen-address={nexus}"} <= set(lines)
    assert topology.builder is not None and topology.builder.host == "buildkit.fractalops.svc"
    assert f"host-record=nexus.nexus.svc,{nexus}" in lines and f"host-record={topology.builder.host},{builder}" in lines
    assert not [line for line in lines if line.startswith("server=")]
    assert dns.render_resolv_conf(nexus).splitlines()[1:] == [f"nameserver {nexus}"]


def _reply(qid: int, rcode: int, name: str, answers: list[tuple[int, bytes]]) -> bytes:
    """A DNS reply to `query(name, qid)` with answers of (type, data), each name a pointer to the question."""
    question = dns.query(name, qid)[12:]
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0)
    records = b"".join(struct.pack("!HHHIH", 0xC00C, kind, 1, 60, len(data)) + data for kind, data in answers)
    return header + question + records


def test_dns_query_and_answer_are_read_as_a_resolver_would() -> None:
    # The A record after a CNAME is found; another id, an error code or no answer give None, as does a torn reply.
    query = dns.query("nexus.nexus.svc", 0x1234)
    assert query[12:] == b"\x05nexus\x05nexus\x03svc\x00\x00\x01\x00\x01"
    found = _reply(0x1234, 0, "nexus.nexus.svc", [(5, b"\xc0\x0c"), (1, bytes([10, 214, 84, 2]))])
    assert dns.answer_address(found, 0x1234) == "10.214.84.2"
    assert dns.answer_address(found, 0x4321) is None
    assert dns.answer_address(_reply(0x1234, 5, "nexus.nexus.svc", []), 0x1234) is None  # REFUSED
    assert dns.answer_address(found[:-3], 0x1234) is None


def test_web_port_serves_the_seeded_packages_on_the_nexus_hosts_address_at_the_topologys_port() -> None:
    # The stand-in runs inside the nexus namespace on <nexus address>:<web_port>, from the state folder's packages.
    nexus = NET.host("nexus")
    topology = cluster_topology(production_topology(REPO), nexus.address)
    argv = web.argv(topology, nexus, Path("/state/packages"))
    assert argv[:4] == ["ip", "netns", "exec", nexus.namespace]
    assert argv[argv.index("--listen") + 1] == f"{nexus.address}:{topology.nexus.web_port}"
    assert argv[argv.index("--root") + 1] == "/state/packages"
    assert topology.nexus.repository_url("pypi-group") == "http://nexus.nexus.svc:8081/repository/pypi-group/"


def test_exec_environment_is_the_hosts_over_the_callers() -> None:
    # A runner's DOCKER_HOST wins over the caller's; an events file the caller chose is kept; other hosts drop DOCKER_HOST.
    caller = {"DOCKER_HOST": "unix:///other.sock", "FRACTALOPS_BUILD_EVENTS_FILE": "/mine.jsonl", "HOME": "/root"}
    runner = {"DOCKER_HOST": "unix:///r1.sock", "FRACTALOPS_BUILD_EVENTS_FILE": "/r1.jsonl", "PATH": "/bin"}
    env = command_env(runner, caller)
    assert env["DOCKER_HOST"] == "unix:///r1.sock"
    assert env["FRACTALOPS_BUILD_EVENTS_FILE"] == "/mine.jsonl"
    assert env["HOME"] == "/root"
    assert "DOCKER_HOST" not in command_env({"PATH": "/bin"}, caller)


def test_a_hosts_path_finds_the_engines_client_first_then_the_toolkits_interpreter(tmp_path: Path) -> None:
    # `devstack exec -- python -m release devstack smoke …` runs the toolkit that made the shape, with the runner's docker.
    import os
    import sys

    paths = ClusterPaths(StackPaths(tmp_path))
    binaries = Binaries("dockerd", "docker", "buildx", "containerd", "registry", "busybox", "/usr/sbin:/usr/bin")
    folders = host_env(paths, "runner-1", binaries)["PATH"].split(":")
    assert folders[:2] == [str(paths.bin_dir), os.path.dirname(sys.executable)]
    assert folders[2:] == ["/usr/sbin", "/usr/bin"]


def test_a_runner_reaches_nexus_by_its_service_name_and_keeps_its_own_user_state(tmp_path: Path) -> None:
    # On a runner `builder create` renders for the service name (the caller may choose otherwise) and writes its
    # buildkitd.toml under the runner's folder, whatever XDG_STATE_HOME the caller has; other hosts get neither.
    paths = ClusterPaths(StackPaths(tmp_path))
    binaries = Binaries("dockerd", "docker", "buildx", "containerd", "registry", "busybox", "/usr/sbin:/usr/bin")
    runner = host_env(paths, "runner-2", binaries)
    assert runner["FRACTALOPS_NEXUS_VIA"] == "service"
    assert runner["XDG_STATE_HOME"] == str(paths.host("runner-2").root / "state")
    caller = {"FRACTALOPS_NEXUS_VIA": "clusterip", "XDG_STATE_HOME": "/home/me/.local/state"}
    env = command_env(runner, caller)
    assert env["FRACTALOPS_NEXUS_VIA"] == "clusterip"
    assert env["XDG_STATE_HOME"] == runner["XDG_STATE_HOME"]
    assert {"FRACTALOPS_NEXUS_VIA", "XDG_STATE_HOME"}.isdisjoint(host_env(paths, "nexus", binaries))


def test_cli_up_offers_the_two_shapes_and_local_stays_the_default() -> None:
    # `devstack up --help` lists local and cluster, local by default.
    result = CliRunner().invoke(main, ["devstack", "up", "--help"])
    assert result.exit_code == 0
    assert "[local|cluster]" in result.output and "default: local" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["devstack", "link", "--host", "runner-1", "--rate", "fast"], "--rate 'fast'"),
        (["devstack", "link", "--host", "runner-9", "--rate", "5mbit"], "--host 'runner-9'"),
        (["devstack", "link", "--host", "runner-1", "--silence", "http"], "--silence 'http'"),
        (["devstack", "exec", "--host", "nope", "--", "true"], "--host 'nope'"),
    ],
)
def test_cli_refuses_bad_link_and_exec_arguments_with_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    # A bad rate, port or host is a one-line usage error (exit 2) before any stack is looked at.
    result = CliRunner().invoke(main, args, env={"FRACTALOPS_DEVSTACK_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(("text", "ms"), [("50ms", 50.0), ("0.2s", 200.0), ("25", 25.0), ("0", 0.0)])
def test_delay_is_read_in_milliseconds_or_seconds(text: str, ms: float) -> None:
    # --delay takes ms (the default unit) or s.
    assert parse_delay(text) == ms


@pytest.mark.parametrize("text", ["11s", "-5ms", "soon", "5min"])
def test_a_delay_outside_zero_to_ten_seconds_is_a_usage_error(text: str) -> None:
    # A delay above 10 s, negative or in another unit is exit 2 naming the value.
    with pytest.raises(UsageError, match="--delay"):
        parse_delay(text)


def test_delay_hands_every_packet_to_the_hosts_queue_and_passes_them_when_nobody_listens() -> None:
    # One NFQUEUE rule with --queue-bypass: a stopped delayer never blackholes the link.
    assert delay_rules() == [["-A", "FX-LINK-DELAY", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"]]
    assert LinkShape(delay_ms=25).describe() == "delay 25ms each way"


@pytest.mark.parametrize(("text", "port"), [("8082", 8082), (" 443 ", 443), ("off", None), ("0", None)])
def test_silence_takes_a_port_or_off(text: str, port: int | None) -> None:
    # --silence takes a TCP port; off (or 0) lifts it.
    assert parse_silence(text) == port


@pytest.mark.parametrize("text", ["65536", "-1", "http", "80,443"])
def test_a_silence_that_is_not_one_port_is_a_usage_error(text: str) -> None:
    # A port out of range, negative, a name or a list is exit 2 naming the value.
    with pytest.raises(UsageError, match="--silence"):
        parse_silence(text)


def test_silence_marks_new_connections_of_the_port_and_drops_every_packet_of_the_others_both_ways() -> None:
    # Silence 3 on 8082: a new connection gets mark 3 in the silence's byte; packets to or from 8082 without it drop.
    mark = "0x30000/0xff0000"
    assert silence_rules(8082, 3) == [
        ["-A", "FX-LINK-SILENCE", "-p", "tcp", "--dport", "8082", "-m", "conntrack", "--ctstate", "NEW",
         "-j", "CONNMARK", "--set-xmark", mark],
        ["-A", "FX-LINK-SILENCE", "-p", "tcp", "--dport", "8082", "-m", "connmark", "!", "--mark", mark, "-j", "DROP"],
        ["-A", "FX-LINK-SILENCE", "-p", "tcp", "--sport", "8082", "-m", "connmark", "!", "--mark", mark, "-j", "DROP"],
    ]  # fmt: skip
    assert silence_rules(None, 3) == []
    assert LinkShape(rate="5mbit", silenced_port=8082).describe() == (
        "rate 5mbit, port 8082 silent for the connections open before"
    )


def test_each_silence_has_a_number_of_its_own_and_the_record_keeps_it(tmp_path: Path) -> None:
    # Numbers go 1 to 255 and round again (a connection marked by an earlier silence is silenced by the next one);
    # the links record gives back the port and the number.
    assert [next_silence_number(n) for n in (0, 1, 254, 255)] == [1, 2, 255, 1]
    record = tmp_path / "links.json"
    record.write_text(
        '{"runner-1": {"rate": null, "loss": 0, "delay_ms": 0, "silenced_port": 8082, "silence_number": 4}}'
    )
    assert read_shapes(record)["runner-1"] == LinkShape(silenced_port=8082, silence_number=4)
    record.write_text('{"runner-1": {"rate": "5mbit", "loss": 0, "delay_ms": 0}}')  # a record from before silences
    assert read_shapes(record)["runner-1"] == LinkShape(rate="5mbit")


def test_link_gives_each_new_silence_a_new_number_and_keeps_it_when_other_options_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --silence starts silence 1, a rate change keeps it, --clear lifts it, the next --silence is number 2 (so the
    # connections made during silence 1 are silenced too); the shapes go to shape_link (iptables) as recorded.
    from release.devstack.cluster import commands

    paths = ClusterPaths(StackPaths(tmp_path))
    paths.root.mkdir(parents=True)
    paths.record.write_text(json.dumps({"port_base": 36380}))
    applied: list[LinkShape] = []

    def record(net: object, host: object, shape: LinkShape, folder: object, links: Path, log: object) -> LinkShape:
        applied.append(shape)
        links.write_text(json.dumps({"runner-1": dataclasses.asdict(shape)}))
        return shape

    monkeypatch.setattr(commands, "shape_link", record)
    commands.link("runner-1", None, None, silence="8082", state_dir=tmp_path)
    commands.link("runner-1", "5mbit", None, state_dir=tmp_path)
    commands.link("runner-1", None, None, clear=True, state_dir=tmp_path)
    commands.link("runner-1", None, None, silence="8082", state_dir=tmp_path)
    assert [(s.rate, s.silenced_port, s.silence_number) for s in applied] == [
        (None, 8082, 1),
        ("5mbit", 8082, 1),
        (None, None, 1),
        (None, 8082, 2),
    ]


def test_delayer_binds_its_queue_for_metadata_only_and_asks_for_acks() -> None:
    # The config messages bind queue 3 for IPv4, copy no payload, ask an ACK each; all are nfnetlink queue configs.
    messages = delay.config_messages(3)
    for raw in messages:
        length, kind, flags = struct.unpack_from("=IHH", raw)
        assert (length, kind) == (len(raw), delay.MSG_CONFIG)
        assert flags & delay.NLM_F_ACK
        assert raw[18:20] == (3).to_bytes(2, "big")  # nfgenmsg res_id: the queue, big-endian
    assert delay.attribute(delay.CFG_CMD, bytes([delay.CMD_BIND, 0, 0, 2])) in messages[0]


def test_delayer_reads_packet_ids_and_acks_from_a_netlink_buffer() -> None:
    # A buffer holding two packet notices and an ACK gives both ids in order and the error code 0.
    def notice(packet_id: int) -> bytes:
        header = delay.attribute(delay.ATTR_PACKET_HDR, packet_id.to_bytes(4, "big") + bytes(3))
        return delay.message(delay.MSG_PACKET, 0, delay.attribute(9, b"xx") + header, 0, 0)

    ack = struct.pack("=IHHIIi", 20, delay.NLMSG_ERROR, 0, 1, 0, 0)
    assert delay.parse(notice(41) + notice(42) + ack) == ([41, 42], [0])


def test_a_batch_verdict_accepts_every_packet_up_to_the_newest_due_one() -> None:
    # The verdict names NF_ACCEPT and the id, big-endian, in a batch verdict message of the queue.
    raw = delay.verdict_batch(0, 77)
    assert struct.unpack_from("=H", raw, 4)[0] == delay.MSG_VERDICT_BATCH
    assert raw.endswith((1).to_bytes(4, "big") + (77).to_bytes(4, "big"))
