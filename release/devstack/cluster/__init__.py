"""The devstack's cluster shape: real hosts in network namespaces (nexus, runners, builder) on a private subnet."""

from release.devstack.cluster.shape import ClusterEnv, down, is_recorded, status, up

__all__ = ["ClusterEnv", "down", "is_recorded", "status", "up"]
