"""Policy check: no cache address or port baked into code, scripts or workflows; nothing retired back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from release.topology.model import Topology
from release.topology.retired import retired

SCANNED = ("release", "ops", ".github")
SKIPPED_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", "node_modules"}


@dataclass(frozen=True)
class Finding:
    """One policy violation at a file and line."""

    path: Path
    line: int
    why: str

    def render(self, root: Path) -> str:
        """`file:line: why`, the path relative to the scanned root."""
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: {self.why}"


def _is_topology_file(path: Path) -> bool:
    """Topology files (and the retired-facts file beside the model) may name addresses."""
    return path.suffix in {".yaml", ".yml"} and any(
        part.startswith("topolog") for part in (*path.parent.parts, path.name)
    )


def is_local_stand_in(topology: Topology) -> bool:
    """True for a topology whose Nexus is on loopback (the local build stack): no production address in it."""
    import ipaddress

    host = topology.nexus.host
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rules(topology: Topology) -> list[tuple[re.Pattern[str], str]]:
    """The patterns to look for, derived from the topology and the retired facts."""
    facts = retired()
    rules: list[tuple[re.Pattern[str], str]] = []
    nexus = topology.nexus
    # The service by any of its DNS names (host names are case-insensitive), and the ClusterIP.
    short = f"{nexus.service}.{nexus.namespace}"
    service = rf"{re.escape(short)}(?:\.svc(?:\.cluster\.local)?)?"
    if nexus.host:
        service = rf"(?:{service}|{re.escape(nexus.host)})"
    rules.append(
        (
            re.compile(rf"(?<![\w.-]){service}(?![\w-]|\.[\w-])", re.IGNORECASE),
            f"the Nexus service host ({nexus.cluster_host}) is baked in; read it from the topology",
        )
    )
    ip = topology.registry_cache.host_ip
    rules.append(
        (
            re.compile(rf"(?<![\w.-]){re.escape(ip)}(?![\w-])"),
            f"the Nexus ClusterIP {ip} is baked in; read it from the topology",
        )
    )
    ports = {
        nexus.web_port: "the Nexus web/REST port",
        nexus.docker_group_port: "the Nexus docker-group port",
        nexus.docker_internal_port: "the Nexus docker-internal port",
    }
    if topology.node_mirror.node_port:
        ports[topology.node_mirror.node_port] = "the node mirror NodePort"
    builder = topology.builder
    if builder is not None:
        names = dict.fromkeys((builder.host, builder.server_name))
        for name in names:
            suffix = r"(?:\.cluster\.local)?" if name.endswith(".svc") else ""
            rules.append(
                (
                    re.compile(rf"(?<![\w.-]){re.escape(name)}{suffix}(?![\w-]|\.[\w-])", re.IGNORECASE),
                    f"the shared BuildKit's host ({name}) is baked in; read builder.endpoint from the topology",
                )
            )
        ports.setdefault(builder.port, "the shared BuildKit's port")
    for port, what in ports.items():
        rules.append(
            (
                re.compile(rf"(?<![\w.]){port}(?![\w])"),
                f"{what} {port} is baked in; read it from the topology",
            )
        )
    for value in (*facts.addresses, *facts.names):
        rules.append(
            (
                re.compile(rf"(?<![\w.]){re.escape(value)}(?![\w])"),
                f"{value} is the retired standalone cache: {facts.folded_message}",
            )
        )
    rules += [(p.regex, f"retired: {p.why}") for p in facts.patterns]
    return rules


def _files(root: Path) -> Iterator[Path]:
    for top in SCANNED:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and not SKIPPED_DIRS.intersection(path.parts) and path.suffix != ".md":
                yield path


def scan(root: Path, topology: Topology) -> list[Finding]:
    """Every finding under the scanned folders of `root`."""
    rules = _rules(topology)
    findings: list[Finding] = []
    for path in _files(root):
        if _is_topology_file(path.relative_to(root)):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        retired_name = next((why for rx, why in rules if rx.search(path.name)), None)
        if retired_name:
            findings.append(Finding(path, 1, f"file name: {retired_name}"))
        for number, line in enumerate(text.splitlines(), start=1):
            for regex, why in rules:
                if regex.search(line):
                    findings.append(Finding(path, number, why))
                    break
    return findings


def scanned_topology(root: Path, topology: Topology) -> tuple[Topology, Path | None]:
    """The topology to scan `root` with, and the committed file used instead of `topology` (None: none used).

    A loopback topology (the local stack's) is valid, but its addresses are the stand-ins' own defaults: the
    scan for baked production addresses then uses the repository's committed topology, when there is one.
    """
    from release.topology.load import RELATIVE_PATH, load_topology

    committed = root / RELATIVE_PATH
    if is_local_stand_in(topology) and committed.is_file():
        return load_topology(committed), committed
    return topology, None
