"""Where the cluster shape keeps its state: `<devstack state dir>/cluster/`, one folder per host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from release.devstack.paths import StackPaths


@dataclass(frozen=True)
class ClusterPaths:
    """Every path of the cluster shape, derived from the devstack's state dir (shared with the loopback shape)."""

    stack: StackPaths

    @property
    def root(self) -> Path:
        """Return the cluster shape's folder."""
        return self.stack.root / "cluster"

    @property
    def record(self) -> Path:
        """Return the record of a cluster `up` (port base, subnet): `down` and `status` read it."""
        return self.root / "cluster.json"

    @property
    def topology(self) -> Path:
        """Return the topology file of the shape."""
        return self.root / "topology.yaml"

    @property
    def secrets(self) -> Path:
        """Return the folder of secret files (0700)."""
        return self.root / "secrets"

    @property
    def htpasswd(self) -> Path:
        """Return the connectors' htpasswd file (0600)."""
        return self.secrets / "htpasswd"

    @property
    def links(self) -> Path:
        """Return the record of each host's link shaping."""
        return self.root / "links.json"

    @property
    def bin_dir(self) -> Path:
        """Return the folder put first on PATH inside the hosts (the engine's docker client)."""
        return self.root / "bin"

    def host(self, name: str) -> StackPaths:
        """Return a host's folder as StackPaths (run/, logs/, etc/, docker-config/: the loopback stack's layout)."""
        return StackPaths(self.root / name)

    def events_file(self, name: str) -> Path:
        """Return the default Build Plane Events file of a host."""
        return self.root / name / "events" / "build-events.jsonl"
