"""Latency without netem: a host's packets are queued to user space (NFQUEUE) and released in order after a delay.

This kernel has no `netem` qdisc (nor `fq`, so no timestamp pacing from BPF either), but it has nfnetlink_queue:
iptables hands each packet of a host's link to this process through a netlink socket, and the process gives the
verdict ACCEPT once the packet has waited the delay. The delay is the same for every packet, so packets leave in
the order they came and one batch verdict (accept every id up to N) releases all that are due (packets whose
notice was lost to a full socket buffer included). The rule uses --queue-bypass (no listener: no delay), so a
stopped delayer never blackholes a link. (The queue's fail-open flag is left off: with it, this kernel accepted
every packet at once.) Run as `python -m release.devstack.cluster.delay --delay-ms D` inside the host's
namespace (netlink queues are per namespace).
"""

from __future__ import annotations

import argparse
import collections
import select
import signal
import socket
import struct
import sys
import time
from types import FrameType

NETLINK_NETFILTER = 12
QUEUE_TYPE = 3 << 8  # NFNL_SUBSYS_QUEUE
MSG_PACKET, MSG_CONFIG, MSG_VERDICT_BATCH = QUEUE_TYPE | 0, QUEUE_TYPE | 2, QUEUE_TYPE | 3
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
ATTR_PACKET_HDR, ATTR_VERDICT_HDR = 1, 2
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN, CFG_MASK, CFG_FLAGS = 1, 2, 3, 4, 5
CMD_BIND, CMD_UNBIND = 1, 2
COPY_META = 1
FLAG_GSO = 4  # whole GSO packets: one verdict per 64 KB on a veth, not one per segment
NF_ACCEPT = 1
QUEUE_MAXLEN = 65536
RECV_BUFFER = 16 * 1024 * 1024


def attribute(kind: int, payload: bytes) -> bytes:
    """Return one netlink attribute (length, type, payload padded to 4 bytes)."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, queue: int, attributes: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    """Return an nfnetlink message for a queue: netlink header, nfgenmsg (queue number big-endian), attributes."""
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", queue) + attributes
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def config_messages(queue: int) -> list[bytes]:
    """Return the messages that bind a queue: metadata only, a long queue, whole GSO packets."""
    flags = struct.pack(">I", FLAG_GSO)
    return [
        message(MSG_CONFIG, queue, attribute(CFG_CMD, struct.pack(">BBH", CMD_BIND, 0, socket.AF_INET)), 1, NLM_F_REQUEST | NLM_F_ACK),
        message(MSG_CONFIG, queue, attribute(CFG_PARAMS, struct.pack(">IB", 0, COPY_META)), 2, NLM_F_REQUEST | NLM_F_ACK),
        message(MSG_CONFIG, queue, attribute(CFG_QUEUE_MAXLEN, struct.pack(">I", QUEUE_MAXLEN)), 3, NLM_F_REQUEST | NLM_F_ACK),
        message(MSG_CONFIG, queue, attribute(CFG_MASK, flags) + attribute(CFG_FLAGS, flags), 4, NLM_F_REQUEST | NLM_F_ACK),
    ]  # fmt: skip


def verdict_batch(queue: int, packet_id: int) -> bytes:
    """Return the message that accepts every queued packet with an id up to `packet_id`."""
    return message(MSG_VERDICT_BATCH, queue, attribute(ATTR_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id)), 0)


def parse(buffer: bytes) -> tuple[list[int], list[int]]:
    """Return the packet ids and the netlink error codes (0 is an ACK) in a received buffer."""
    ids: list[int] = []
    errors: list[int] = []
    offset = 0
    while offset + 16 <= len(buffer):
        length, kind = struct.unpack_from("=IH", buffer, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR:
            errors.append(-struct.unpack_from("=i", buffer, offset + 16)[0])
        elif kind == MSG_PACKET:
            at = offset + 20  # after the netlink header and nfgenmsg
            while at + 4 <= offset + length:
                size, attr = struct.unpack_from("=HH", buffer, at)
                if size < 4:
                    break
                if attr & 0x7FFF == ATTR_PACKET_HDR:
                    ids.append(struct.unpack_from(">I", buffer, at + 4)[0])
                    break
                at += size + (-size % 4)
        offset += length + (-length % 4)
    return ids, errors


class Delayer:
    """One queue's loop: take packet ids in, give batch verdicts when their delay has passed."""

    def __init__(self, queue: int, delay: float) -> None:
        """Open and bind the queue's netlink socket."""
        self.queue = queue
        self.delay = delay
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, RECV_BUFFER)  # SO_RCVBUFFORCE (root): room for bursts
        self.sock.bind((0, 0))
        for request in config_messages(queue):
            self.sock.send(request)
            _, errors = parse(self.sock.recv(65536))
            if any(errors):
                raise OSError(errors[0], f"binding nfqueue {queue}: netlink error {errors[0]}")
        self.pending: collections.deque[tuple[float, int]] = collections.deque()
        self.running = True

    def release_due(self, now: float) -> None:
        """Accept every packet whose delay has passed (one batch verdict for the newest of them)."""
        last = None
        while self.pending and self.pending[0][0] <= now:
            last = self.pending.popleft()[1]
        if last is not None:
            self.sock.send(verdict_batch(self.queue, last))

    def run(self) -> None:
        """Loop until stopped: wait for packets or the next due time, release what is due."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while self.running:
            timeout = max(0.0, self.pending[0][0] - time.monotonic()) if self.pending else 1.0
            if poller.poll(timeout * 1000):
                try:
                    data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    data = b""
                except OSError:  # ENOBUFS: notifications were lost; the next batch verdict releases those packets too
                    data = b""
                arrived = time.monotonic()
                self.pending.extend((arrived + self.delay, packet_id) for packet_id in parse(data)[0])
            self.release_due(time.monotonic())
        if self.pending:
            self.sock.send(verdict_batch(self.queue, self.pending[-1][1]))

    def stop(self, _signum: int, _frame: FrameType | None) -> None:
        """Leave the loop (SIGTERM): what is queued is released at once."""
        self.running = False


def main(argv: list[str] | None = None) -> int:
    """Run the delayer for one queue until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m release.devstack.cluster.delay")
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    delayer = Delayer(args.queue, args.delay_ms / 1000)
    signal.signal(signal.SIGTERM, delayer.stop)
    signal.signal(signal.SIGINT, delayer.stop)
    print(f"delaying queue {args.queue} by {args.delay_ms:g} ms", file=sys.stderr, flush=True)
    delayer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
