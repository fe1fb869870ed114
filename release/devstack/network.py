"""The stack's network: its own bridge (never a system engine's docker0) and its ports kept out of the ephemeral range."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

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


RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")
_RESERVED_LOCK = Path("/run/lock/fractalops-devstack-ports.lock")


def _parse_reserved(text: str) -> set[int]:
    """The ports of a ip_local_reserved_ports value (`a,b-c,…`)."""
    ports: set[int] = set()
    for part in text.replace("\n", "").split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit():
            ports.update(range(int(low), int(high or low) + 1))
    return ports


def _update_reserved(add: set[int], remove: set[int]) -> bool:
    """Add and remove ports in the kernel's reserved list (under a machine-wide lock); False where it cannot be written."""
    try:
        _RESERVED_LOCK.parent.mkdir(parents=True, exist_ok=True)
        with _RESERVED_LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = _parse_reserved(RESERVED_PORTS.read_text())
            wanted = (current | add) - remove
            if wanted != current:
                RESERVED_PORTS.write_text(",".join(str(p) for p in sorted(wanted)) + "\n")
    except OSError:
        return False
    return True


def reserve_ports(ports: PortLayout) -> bool:
    """Keep the kernel from handing the stack's ports out as ephemeral ports (a client socket could take one)."""
    return _update_reserved(set(ports.all_ports()), set())


def release_ports(ports: PortLayout) -> bool:
    """Give the stack's ports back to the kernel's ephemeral range."""
    return _update_reserved(set(), set(ports.all_ports()))


def ports_reserved(ports: PortLayout) -> bool:
    """Whether all of the stack's ports are in the kernel's reserved list."""
    try:
        return set(ports.all_ports()) <= _parse_reserved(RESERVED_PORTS.read_text())
    except OSError:
        return False
