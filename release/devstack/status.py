"""The stack's status as plain data, and its text rendering."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ComponentStatus:
    """One component: whether it runs, whether it answers, where, and why not."""

    name: str
    running: bool
    healthy: bool
    pid: int | None = None
    endpoint: str = ""
    detail: str = ""


@dataclass(frozen=True)
class StackStatus:
    """The whole stack: its state dir, its components, and the files tools read."""

    state_dir: str
    components: list[ComponentStatus] = field(default_factory=list)
    topology: str = ""
    installed: bool = False

    @property
    def healthy(self) -> bool:
        """Return True when every component runs and answers."""
        return self.installed and bool(self.components) and all(c.healthy for c in self.components)

    @property
    def unhealthy(self) -> list[ComponentStatus]:
        """Return the components that do not run or do not answer."""
        return [c for c in self.components if not c.healthy]

    @property
    def exit_code(self) -> int:
        """Return the exit status for `devstack status`: 0 healthy, 1 otherwise."""
        return 0 if self.healthy else 1


def render_status(status: StackStatus) -> str:
    """Return a human-readable table of the stack's status."""
    lines = [f"devstack state dir: {status.state_dir}", f"installed: {'yes' if status.installed else 'no'}"]
    width = max((len(c.name) for c in status.components), default=10)
    for comp in status.components:
        state = "ok" if comp.healthy else ("UNHEALTHY" if comp.running else "DOWN")
        pid = f"pid {comp.pid}" if comp.pid else "no pid"
        detail = f"  ({comp.detail})" if comp.detail else ""
        lines.append(f"  {comp.name:<{width}}  {state:<9}  {pid:<10}  {comp.endpoint}{detail}")
    if status.topology:
        lines.append(f"topology: {status.topology}")
    lines.append(
        "healthy" if status.healthy else f"unhealthy: {', '.join(c.name for c in status.unhealthy) or 'not installed'}"
    )
    return "\n".join(lines) + "\n"
