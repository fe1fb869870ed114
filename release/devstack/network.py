"""The engine's own bridge interface, so the stack never shares a system engine's docker0."""

from __future__ import annotations

import json

from release.adapters import process
from release.devstack.commands import run
from release.devstack.ports import PortLayout
from release.errors import EngineError


def bridge_name(ports: PortLayout) -> str:
    """Return the stack's bridge name (at most 15 characters, unique per port base)."""
    return f"fxds{ports.base}"


def bridge_cidr(ports: PortLayout) -> str:
    """Return the bridge's address and prefix, a private /24 derived from the port base."""
    return f"10.213.{(ports.base // 10) % 256}.1/24"


def bridge_address(ports: PortLayout) -> str:
    """Return the bridge's own address (where build containers reach the host's package stand-ins)."""
    return bridge_cidr(ports).split("/", 1)[0]


def bridge_exists(name: str) -> bool:
    """Return True if a network interface of that name exists."""
    proc = process.run(["ip", "-j", "link", "show", "dev", name], check=False)
    return proc.returncode == 0 and bool(json.loads(proc.stdout or "[]"))


def ensure_bridge(ports: PortLayout) -> bool:
    """Create and bring up the stack's bridge if it is missing; return whether it was created."""
    name = bridge_name(ports)
    if bridge_exists(name):
        return False
    hint = "the engine needs a bridge for RUN steps; run as root with iproute2 (`apt-get install iproute2`)"
    run(
        ["ip", "link", "add", "name", name, "type", "bridge"],
        step=f"creating bridge {name}",
        hint=hint,
        error=EngineError,
    )
    run(
        ["ip", "addr", "add", bridge_cidr(ports), "dev", name],
        step=f"addressing bridge {name}",
        hint=hint,
        error=EngineError,
    )
    run(["ip", "link", "set", name, "up"], step=f"bringing up bridge {name}", hint=hint, error=EngineError)
    return True


def remove_bridge(ports: PortLayout) -> bool:
    """Delete the stack's bridge if it exists; return whether it did."""
    name = bridge_name(ports)
    if not bridge_exists(name):
        return False
    run(
        ["ip", "link", "delete", name],
        step=f"deleting bridge {name}",
        hint=f"delete it by hand: `ip link delete {name}`",
        error=EngineError,
    )
    return True
