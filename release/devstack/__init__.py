"""A local build stack (engine, buildx, registries) for tests and the demo, managed by up/down/status."""

from release.devstack.stack import StackEnv, down, status, up
from release.devstack.status import ComponentStatus, StackStatus, render_status

__all__ = [
    "ComponentStatus",
    "StackEnv",
    "StackStatus",
    "down",
    "render_status",
    "status",
    "up",
]
