"""The nexus host: docker-registry as the hosted and group connectors (htpasswd), and the group's seeded upstream."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.adapters import process
from release.devstack import processes
from release.devstack.cluster.credentials import Credentials
from release.devstack.cluster.hosts import Host, in_netns
from release.devstack.cluster.oci import PlainRegistry, gunzipped_sha256, gzip_layer_image, layer_tar, one_layer_image
from release.devstack.cluster.topology import UPSTREAM_PORT
from release.devstack.configs import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAGS, dump_yaml
from release.devstack.install import Binaries
from release.devstack.packages import Seed
from release.devstack.paths import StackPaths
from release.errors import OperationError
from release.topology.model import Topology

Log = Callable[[str], None]
READY_TIMEOUT = 30.0
# Start order: the group connector dials its upstream when it starts.
ROLES = ("upstream", "hosted", "group")


@dataclass(frozen=True)
class Connector:
    """One registry of the nexus host: role, port, whether it asks for credentials, what it proxies."""

    role: str
    port: int
    authenticated: bool
    proxy: str | None = None

    @property
    def component(self) -> str:
        """Return the component (pidfile and log) name."""
        return f"registry-{self.role}"


def connectors(topology: Topology, host: Host) -> list[Connector]:
    """Return the nexus host's registries: ports from the topology, the upstream on the stand-in's own port."""
    upstream = f"http://{host.address}:{UPSTREAM_PORT}"
    by_role = {
        "upstream": Connector("upstream", UPSTREAM_PORT, authenticated=False),
        "hosted": Connector("hosted", topology.nexus.docker_internal_port, authenticated=True),
        "group": Connector("group", topology.nexus.docker_group_port, authenticated=True, proxy=upstream),
    }
    return [by_role[role] for role in ROLES]


def registry_config(connector: Connector, host: Host, data: Path, htpasswd: Path) -> dict[str, Any]:
    """Return a CNCF distribution config: the host's address, storage in the state folder, htpasswd when asked."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": connector.component}},
        "storage": {
            "filesystem": {"rootdirectory": str(data / connector.role)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"{host.address}:{connector.port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if connector.authenticated:
        config["auth"] = {"htpasswd": {"realm": "nexus", "path": str(htpasswd)}}
    if connector.proxy:
        config["proxy"] = {"remoteurl": connector.proxy}
    return config


def config_file(folder: StackPaths, connector: Connector) -> Path:
    """Return a connector's rendered config file."""
    return folder.config_file(f"{connector.component}.yml")


def write_configs(folder: StackPaths, topology: Topology, host: Host, htpasswd: Path) -> set[str]:
    """Write every registry config; return the components whose config changed."""
    from release.devstack.stack import write_if_changed

    changed: set[str] = set()
    for connector in connectors(topology, host):
        text = dump_yaml(registry_config(connector, host, folder.registry_data, htpasswd))
        if write_if_changed(config_file(folder, connector), text):
            changed.add(connector.component)
    return changed


def client(host: Host, connector: Connector, credentials: Credentials | None, timeout: float = 10.0) -> PlainRegistry:
    """Return a V2 client for a connector, reached from the root namespace over the root link."""
    user = credentials.username if credentials and connector.authenticated else None
    password = credentials.password if credentials and connector.authenticated else None
    return PlainRegistry(f"{host.address}:{connector.port}", user, password, timeout=timeout)


def wait_ready(folder: StackPaths, host: Host, pending: list[Connector], timeout: float = READY_TIMEOUT) -> None:
    """Wait until each registry answers `/v2/` (200, or 401 asking for credentials); raise with its log's cause."""
    from release.devstack.stack import wait_answering

    by_component = {c.component: c for c in pending}
    wait_answering(
        folder,
        list(by_component),
        lambda component: client(host, by_component[component], None, timeout=2.0).answers() in (200, 401),
        timeout,
    )


def start(
    folder: StackPaths,
    topology: Topology,
    host: Host,
    binaries: Binaries,
    reconfigured: set[str],
    log: Log,
) -> list[str]:
    """Start the registries that do not run (restarting reconfigured ones) inside the nexus namespace."""
    started: list[str] = []
    for connector in connectors(topology, host):
        tracked = processes.running(folder, connector.component)
        if tracked is not None and connector.component in reconfigured:
            log(f"devstack: restarting nexus {connector.component} (configuration changed)")
            processes.stop(folder, connector.component)
            tracked = None
        if tracked is None:
            log(f"devstack: starting nexus {connector.component} on {host.address}:{connector.port}")
            argv = in_netns(host.namespace, [binaries.registry, "serve", config_file(folder, connector)])
            processes.start(folder, connector.component, argv, env={"PATH": binaries.engine_path})
            started.append(connector.component)
        wait_ready(folder, host, [connector])
    return started


def stop(folder: StackPaths, log: Log) -> list[str]:
    """Stop the nexus host's registries (group first); return what was running."""
    stopped: list[str] = []
    for role in reversed(ROLES):
        pid = processes.stop(folder, f"registry-{role}")
        if pid is not None:
            log(f"devstack: stopped nexus registry-{role} (pid {pid})")
            stopped.append(f"registry-{role}")
    return stopped


def busybox_image_tar(busybox: str) -> bytes:
    """Return the layer of the offline base image: Debian's busybox-static and a symlink per applet."""
    applets = process.run([busybox, "--list-full"], what="listing busybox applets").stdout.split()
    links = {path: "/bin/busybox" for path in applets if path != "bin/busybox"}
    return layer_tar({"bin/busybox": Path(busybox).read_bytes()}, links, executable=("bin/busybox",))


def seed_upstream(host: Host, binaries: Binaries, log: Log) -> list[str]:
    """Push the offline base image to the upstream (the docker.io stand-in) unless it has it; return the tags pushed."""
    upstream = PlainRegistry(f"{host.address}:{UPSTREAM_PORT}")
    missing = [tag for tag in BASE_IMAGE_TAGS if upstream.manifest_digest(BASE_IMAGE_REPOSITORY, tag) is None]
    if not missing:
        return []
    image = one_layer_image(busybox_image_tar(binaries.busybox), cmd=["/bin/sh"])
    for tag in missing:
        log(f"devstack: seeding {BASE_IMAGE_REPOSITORY}:{tag} into the nexus host's upstream")
        upstream.push(BASE_IMAGE_REPOSITORY, tag, image)
    return missing


def seed_debian(folder: StackPaths, host: Host, seed: Seed, log: Log) -> bool:
    """Push debian:<suite>-slim (the seeded mmdebstrap rootfs as its one layer) to the upstream unless it holds it."""
    upstream = PlainRegistry(f"{host.address}:{UPSTREAM_PORT}", timeout=300.0)
    repository, tag = seed.spec.base_repository, seed.spec.base_tag
    record = folder.root / "seed-debian.json"
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        recorded = {}
    same = isinstance(recorded, dict) and recorded.get("rootfs") == seed.rootfs.name and recorded.get("digest")
    if same and upstream.manifest_digest(repository, tag) == recorded["digest"]:
        return False
    log(f"devstack: seeding {repository}:{tag} (mmdebstrap rootfs) into the nexus host's upstream")
    image = gzip_layer_image(
        seed.rootfs.read_bytes(),
        gunzipped_sha256(seed.rootfs),
        cmd=["bash"],
        created_by=f"fractalops devstack seed (mmdebstrap {seed.spec.suite} minbase)",
    )
    digest = upstream.push(repository, tag, image)
    record.write_text(json.dumps({"rootfs": seed.rootfs.name, "image": f"{repository}:{tag}", "digest": digest}) + "\n")
    return True


def describe_holdings(tags: dict[str, list[str]]) -> str:
    """Return `repo (tag)` for a repository with one tag, `repo (N tags)` for more, comma-separated."""
    shown = [f"{repo} ({found[0] if len(found) == 1 else f'{len(found)} tags'})" for repo, found in tags.items()]
    return ", ".join(shown) or "nothing yet"


def holdings(host: Host, topology: Topology, credentials: Credentials | None) -> dict[str, dict[str, list[str]] | str]:
    """Return what each registry holds (repository: tags, or why it could not be read), with the stack's credentials."""
    held: dict[str, dict[str, list[str]] | str] = {}
    for connector in connectors(topology, host):
        registry = client(host, connector, credentials, timeout=5.0)
        try:
            repositories = registry.catalog()
        except OperationError as err:
            held[connector.role] = str(err)
            continue
        found: dict[str, list[str]] = {}
        for repository in repositories:
            try:
                tags = sorted(registry.tags(repository))
            except OperationError:
                tags = []  # blobs without a tag (an upload in progress, a probe): nothing to name
            if tags:
                found[repository] = tags
        held[connector.role] = found
    return held
