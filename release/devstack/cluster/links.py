"""Shaping a host's link, per run: rate (tc tbf), loss (iptables statistic), latency (NFQUEUE), silence (connmark).

This kernel has no netem, so latency comes from `delay.py`, a user-space queue that releases packets in order.

Loss, delay and silence rules sit in the mangle table's PREROUTING (in on eth0) and POSTROUTING (out on eth0), so they
catch what the host forwards too (RUN steps of a runner's engine, NATed out of its docker0), not only its own
sockets; tbf sits on both ends of the link and limits everything on it. A silence marks each connection of its
port that starts while it holds and drops every packet of the others, so a peer that goes quiet in the middle of a
transfer (its connections stay open, nothing comes back) can be played while new connections still work.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from release.adapters import process
from release.devstack.cluster.hosts import INNER_LINK, ClusterNet, Host, in_netns
from release.devstack.commands import run
from release.devstack.paths import StackPaths
from release.errors import EngineError, UsageError

Log = Callable[[str], None]
LOSS_CHAIN = "FX-LINK-LOSS"
DELAY_CHAIN = "FX-LINK-DELAY"
SILENCE_CHAIN = "FX-LINK-SILENCE"
# Connmark bits of the silences' own: each silence marks the connections that start while it holds with its number,
# so a connection made during an earlier silence is silenced by the next one like any other open connection.
SILENCE_MARK_MASK = 0xFF0000
SILENCE_MARK_SHIFT = 16
DELAY_COMPONENT = "link-delay"
DELAY_QUEUE = 0  # netlink queues are per namespace: each host's delayer has queue 0 of its own
MAX_DELAY_MS = 10_000.0
_DELAY = re.compile(r"(\d+(?:\.\d+)?)(ms|s)?")
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
    delay_ms: float = 0.0
    silenced_port: int | None = None
    silence_number: int = 0  # which silence this is (1..255, then 1 again): its connmark

    @property
    def shaped(self) -> bool:
        """Return whether anything limits the link."""
        return self.rate is not None or self.loss > 0 or self.delay_ms > 0 or self.silenced_port is not None

    def describe(self) -> str:
        """Return a short description for status output."""
        if not self.shaped:
            return "unshaped"
        parts = [f"rate {self.rate}"] if self.rate else []
        parts += [f"loss {self.loss:g}%"] if self.loss else []
        parts += [f"delay {self.delay_ms:g}ms each way"] if self.delay_ms else []
        parts += [f"port {self.silenced_port} silent for the connections open before"] if self.silenced_port else []
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


def parse_delay(text: str) -> float:
    """Return a one-way delay in milliseconds from `50ms`, `0.2s` or `50`; outside 0..10 s is a usage error."""
    match = _DELAY.fullmatch(text.strip().lower())
    value = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0) if match else -1.0
    if not 0 <= value <= MAX_DELAY_MS:
        raise UsageError(f"--delay {text!r}: want a delay from 0 to 10 s, e.g. 50ms")
    return value


def parse_silence(text: str) -> int | None:
    """Return the TCP port to silence from `5000`; `off` (or 0, none) is None; anything else is a usage error."""
    value = text.strip().lower()
    if value in ("off", "none", "0"):
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise UsageError(f"--silence {text!r}: want a TCP port from 1 to 65535, e.g. 5000, or off")
    return int(value)


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


def _ensure_chain(host: Host, chain: str, position: int) -> None:
    """Create a mangle chain jumped to from PREROUTING (in on eth0) and POSTROUTING (out on eth0), then flush it."""
    if _iptables(host, ["-t", "mangle", "-L", chain, "-n"], check=False) != 0:
        _iptables(host, ["-t", "mangle", "-N", chain])
    for hook, flag in (("PREROUTING", "-i"), ("POSTROUTING", "-o")):
        jump = [hook, flag, INNER_LINK, "-j", chain]
        if _iptables(host, ["-t", "mangle", "-C", *jump], check=False) != 0:
            _iptables(host, ["-t", "mangle", "-I", hook, str(position), *jump[1:]])
    _iptables(host, ["-t", "mangle", "-F", chain])


def set_loss(host: Host, loss: float) -> None:
    """Drop `loss` percent of the packets in each direction of a host's link (0: none)."""
    _ensure_chain(host, LOSS_CHAIN, 1)
    for rule in loss_rules(loss):
        _iptables(host, ["-t", "mangle", *rule])


def next_silence_number(previous: int) -> int:
    """Return the number of a new silence after `previous` (1 to 255, then 1 again)."""
    return previous % 255 + 1


def silence_rules(port: int | None, number: int) -> list[list[str]]:
    """Return the iptables commands (after the chain is flushed) of silence `number` on the connections of `port`.

    A TCP connection to or from the port that starts while the silence holds is marked with its number by its first
    packet; every packet of any other (open when the silence began) is dropped, in both directions. None: no rule.
    """
    if port is None:
        return []
    mark = f"{number << SILENCE_MARK_SHIFT:#x}/{SILENCE_MARK_MASK:#x}"
    rules = [["-A", SILENCE_CHAIN, "-p", "tcp", "--dport", str(port), "-m", "conntrack", "--ctstate", "NEW",
              "-j", "CONNMARK", "--set-xmark", mark]]  # fmt: skip
    for side in ("--dport", "--sport"):
        rules.append(["-A", SILENCE_CHAIN, "-p", "tcp", side, str(port), "-m", "connmark", "!", "--mark", mark,
                      "-j", "DROP"])  # fmt: skip
    return rules


def set_silence(host: Host, port: int | None, number: int) -> None:
    """Drop every packet of the host's connections of `port` open when silence `number` began (None: lift it).

    Applied again with the same number (another option of the link changed), it keeps the same connections silent.
    The chain comes first, before loss and delay, so a delayed packet is silenced too.
    """
    _ensure_chain(host, SILENCE_CHAIN, 1)
    for rule in silence_rules(port, number):
        _iptables(host, ["-t", "mangle", *rule])


def delay_rules() -> list[list[str]]:
    """Return the iptables command (after the chain is flushed) that hands every packet to the host's delayer."""
    return [["-A", DELAY_CHAIN, "-j", "NFQUEUE", "--queue-num", str(DELAY_QUEUE), "--queue-bypass"]]


def queue_bound(host: Host) -> bool:
    """Return whether a delayer listens on the host's queue (the kernel lists bound queues per namespace)."""
    listed = process.run(in_netns(host.namespace, ["cat", "/proc/net/netfilter/nfnetlink_queue"]), check=False)
    return any(line.split()[:1] == [str(DELAY_QUEUE)] for line in listed.stdout.splitlines())


def set_delay(host: Host, folder: StackPaths, delay_ms: float, log: Log) -> None:
    """Delay every packet of a host's link by `delay_ms` in each direction (0: stop the delayer, drop the rule)."""
    from release.devstack import processes

    _ensure_chain(host, DELAY_CHAIN, 2)
    processes.stop(folder, DELAY_COMPONENT)
    if delay_ms <= 0:
        return
    argv = in_netns(host.namespace, [sys.executable, "-m", "release.devstack.cluster.delay",
                                     "--queue", str(DELAY_QUEUE), "--delay-ms", f"{delay_ms:g}"])  # fmt: skip
    processes.start(folder, DELAY_COMPONENT, argv)
    deadline = time.monotonic() + 20.0
    while not queue_bound(host):
        if processes.running(folder, DELAY_COMPONENT) is None or time.monotonic() > deadline:
            processes.stop(folder, DELAY_COMPONENT)
            raise EngineError(
                f"the delayer of {host.name} did not bind its queue; log {folder.logfile(DELAY_COMPONENT)}. "
                f"What to do: read the log, then `devstack link --host {host.name} --delay 0`."
            )
        time.sleep(0.1)
    for rule in delay_rules():
        _iptables(host, ["-t", "mangle", *rule])


def stop_delay(folder: StackPaths) -> int | None:
    """Stop a host's delayer (at `down`); return its pid if it ran."""
    from release.devstack import processes

    return processes.stop(folder, DELAY_COMPONENT)


def read_shapes(record: Path) -> dict[str, LinkShape]:
    """Return the recorded shape of each host's link."""
    try:
        data = json.loads(record.read_text())
        return {
            name: LinkShape(
                rate=v.get("rate"),
                loss=float(v.get("loss", 0)),
                delay_ms=float(v.get("delay_ms", 0)),
                silenced_port=int(v["silenced_port"]) if v.get("silenced_port") else None,
                silence_number=int(v.get("silence_number", 0)),
            )
            for name, v in data.items()
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def shape_link(net: ClusterNet, host: Host, shape: LinkShape, folder: StackPaths, record: Path, log: Log) -> LinkShape:
    """Apply a shape to a host's link (replacing the previous one) and record it."""
    if shape.rate is not None:
        rate_bytes(shape.rate)
    set_rate(net, host, shape.rate)
    set_loss(host, shape.loss)
    set_delay(host, folder, shape.delay_ms, log)
    set_silence(host, shape.silenced_port, shape.silence_number)
    shapes = read_shapes(record)
    shapes[host.name] = shape
    record.write_text(json.dumps({name: asdict(s) for name, s in sorted(shapes.items())}, indent=2) + "\n")
    log(f"devstack: {host.name}'s link: {shape.describe()}")
    return shape
