"""The cache-plane topology: the one place Nexus endpoints live, and what is rendered from it."""

from release.topology.load import default_topology_path, load_topology
from release.topology.model import Topology

__all__ = ["Topology", "default_topology_path", "load_topology"]
