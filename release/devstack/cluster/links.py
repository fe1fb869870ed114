"""Shaping a host's link, per run: rate with tc tbf on both ends, random loss with iptables' statistic match."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from release.adapters import process
from release.devstack.cluster.hosts import INNER_LINK, ClusterNet, Host, in_netns
from release.devstack.commands import run
from release.errors import EngineError, UsageError

Log = Callable[[str], None]
LOSS_CHAIN = "FX-LINK-LOSS"
# Bytes per second of one unit of tc's rate syntax (tc counts k, m, g in powers of 1000).
_RATE_UNITS = {
    "bit": 1 / 8,
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "bps": 1,
    "kbps": 1e3,
    "mbps": 1e6,
    "gbps": 1e9,
}
_RATE = re.compile(r"(\d+(?:\.\d+)?)(" + "|".join(_RATE_UNITS) + r")")
_LOSS = re.compile(r"(\d+(?:\.\d+)?)%?")
MIN_BURST = 32 * 1024
# The queue a shaped link may hold before it drops (tbf's `latency`): enough for TCP to keep the link busy.
QUEUE_LATENCY = "100ms"


@dataclass(frozen=True)
class LinkShape:
    """How a host's link is shaped: a rate in tc's syntax (`5mbit`, `100kbps`) and a loss in percent per direction."""

    rate: str | None = None
    loss: float = 0.0

    @property
    def shaped(self) -> bool:
        """Return whether anything limits the link."""
        return self.rate is not None or self.loss > 0

    def describe(self) -> str:
        """Return a short description for status output."""
        if not self.shaped:
            return "unshaped"
        parts = [f"rate {self.rate}"] if self.rate else []
        parts += [f"loss {self.loss:g}%"] if self.loss else []
        return ", ".join(parts)


def rate_bytes(rate: str) -> float:
    """Return a tc rate in bytes per second; anything else is a usage error naming the value."""
    match = _RATE.fullmatch(rate.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--rate {rate!r}: want a positive rate in tc's syntax, e.g. 5mbit, 800kbit or 100kbps")
    return float(match.group(1)) * _RATE_UNITS[match.group(2)]


def parse_loss(text: str) -> float:
    """Return a loss percentage from `1%`, `0.5` or `0`; outside 0..100 is a usage error."""
    match = _LOSS.fullmatch(text.strip())
    if not match or not 0 <= float(match.group(1)) < 100:
        raise UsageError(f"--loss {text!r}: want a percentage from 0 to below 100, e.g. 1%")
    return float(match.group(1))


def burst_bytes(rate: str) -> int:
    """Return tbf's bucket: 20 ms at the rate, at least 32 KiB (a bucket below the MTU would stall the link)."""
    return max(MIN_BURST, int(rate_bytes(rate) / 50))


def tbf_args(rate: str) -> list[str]:
    """Return the tbf qdisc's arguments for a rate."""
    return ["tbf", "rate", rate.strip().lower(), "burst", str(burst_bytes(rate)), "latency", QUEUE_LATENCY]


def loss_rules(loss: float) -> list[list[str]]:
    """Return the iptables commands (after the chain is flushed) that drop `loss` percent of the packets."""
    if loss <= 0:
        return []
    probability = f"{loss / 100:.6f}".rstrip("0").rstrip(".")
    return [["-A", LOSS_CHAIN, "-m", "statistic", "--mode", "random", "--probability", probability, "-j", "DROP"]]


def _tc(namespace: str, args: list[str], step: str) -> None:
    """Run one tc command in a namespace."""
    run(
        ["tc", "-n", namespace, *args], step=step, hint="tc comes with iproute2; the link must exist", error=EngineError
    )


def _iptables(host: Host, args: list[str], check: bool = True) -> int:
    """Run iptables inside a host's namespace; return its exit code."""
    argv = in_netns(host.namespace, ["iptables", "-w", *args])
    if check:
        run(
            argv,
            step=f"iptables {' '.join(args)} in {host.namespace}",
            hint="apt-get install iptables",
            error=EngineError,
        )
        return 0
    return process.run(argv, check=False).returncode


def set_rate(net: ClusterNet, host: Host, rate: str | None) -> None:
    """Limit both directions of a host's link to `rate` (None: remove the limit)."""
    ends = ((host.namespace, INNER_LINK), (net.hub, host.hub_link))
    for namespace, device in ends:
        if rate is None:
            process.run(["tc", "-n", namespace, "qdisc", "del", "dev", device, "root"], check=False)
        else:
            _tc(
                namespace,
                ["qdisc", "replace", "dev", device, "root", *tbf_args(rate)],
                f"shaping {device} in {namespace}",
            )


def set_loss(host: Host, loss: float) -> None:
    """Drop `loss` percent of the packets in each direction of a host's link (0: none)."""
    if _iptables(host, ["-L", LOSS_CHAIN, "-n"], check=False) != 0:
        _iptables(host, ["-N", LOSS_CHAIN])
    for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
        jump = [chain, flag, INNER_LINK, "-j", LOSS_CHAIN]
        if _iptables(host, ["-C", *jump], check=False) != 0:
            _iptables(host, ["-I", *jump])
    _iptables(host, ["-F", LOSS_CHAIN])
    for rule in loss_rules(loss):
        _iptables(host, rule)


def read_shapes(record: Path) -> dict[str, LinkShape]:
    """Return the recorded shape of each host's link."""
    try:
        data = json.loads(record.read_text())
        return {name: LinkShape(rate=v.get("rate"), loss=float(v.get("loss", 0))) for name, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def shape_link(net: ClusterNet, host: Host, shape: LinkShape, record: Path, log: Log) -> LinkShape:
    """Apply a shape to a host's link (replacing the previous one) and record it."""
    if shape.rate is not None:
        rate_bytes(shape.rate)
    set_rate(net, host, shape.rate)
    set_loss(host, shape.loss)
    shapes = read_shapes(record)
    shapes[host.name] = shape
    record.write_text(json.dumps({name: asdict(s) for name, s in sorted(shapes.items())}, indent=2) + "\n")
    log(f"devstack: {host.name}'s link: {shape.describe()}")
    return shape
