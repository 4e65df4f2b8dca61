"""Message pairing speed in timing mode: FIFO matching by sorts (targets/messages.py) against the
dict-per-message loop it replaced, on synthetic Programs of N messages over 64 chips, and the whole
message check (pairing, sizes, the wired arrival and where each receiver sits) on lpu-mini's wiring.

    python benchmarks/message_pairing.py [--messages 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np

from ir.isa import Op
from ir.program import empty_columns
from targets import load_target
from targets.messages import Wires, check_messages, fifo_pairs


def columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n SENDs and their n RECVs: random (sender, receiver) pairs of 64 chips, distinct tags per pair."""
    rng = np.random.default_rng(seed)
    c = empty_columns(2 * n)
    a, b = rng.integers(0, 64, n), rng.integers(0, 64, n)
    tag = np.arange(n) % 4096
    issue = rng.integers(0, 10**6, n)
    c["op"][:n], c["chip"][:n], c["peer"][:n], c["tag"][:n], c["issue"][:n] = Op.SEND, a, b, tag, issue
    c["op"][n:], c["chip"][n:], c["peer"][n:], c["tag"][n:], c["issue"][n:] = Op.RECV, b, a, tag, issue + 500
    c["unit"][:n], c["unit"][n:] = 0, 1  # a local link's send and receive units
    return c


class _Count:
    def __init__(self):
        self.hazards = 0

    def add(self, *_):
        self.hazards += 1


def whole_check(c: dict[str, np.ndarray]) -> int:
    """targets/messages.py's check_messages on lpu-mini (64 chips: 8 nodes); returns the hazards found."""
    system, found = load_target("lpu-mini"), _Count()
    program = SimpleNamespace(cols=c, chips=64, dialect="queues", meta={})
    start = c["issue"] + np.where(c["op"] == Op.RECV, 10**4, 0)  # every receive after its data arrives
    check_messages(program, start, found, Wires(program, system))
    return found.hazards


def dict_loop(c: dict[str, np.ndarray]) -> int:
    """The previous matching: one dict entry per (chip, peer, tag), a Python loop over messages."""
    sends, recvs = np.flatnonzero(c["op"] == Op.SEND), np.flatnonzero(c["op"] == Op.RECV)
    key_s = {(int(c["chip"][i]), int(c["peer"][i]), int(c["tag"][i])): int(i) for i in sends}
    key_r = {(int(c["peer"][i]), int(c["chip"][i]), int(c["tag"][i])): int(i) for i in recvs}
    return sum(1 for k in key_s.keys() & key_r.keys() if c["src_bytes"][key_s[k]] == c["dst_bytes"][key_r[k]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", default="10000,100000,1000000")
    args = parser.parse_args()
    print(f"{'messages':>10} | {'fifo sort (s)':>13} | {'dict loop (s)':>13} | {'speed-up':>8} | "
          f"{'whole check (s)':>15}")
    for n in (int(x) for x in args.messages.split(",")):
        c = columns(n)
        started = time.perf_counter()
        sends, recvs = np.flatnonzero(c["op"] == Op.SEND), np.flatnonzero(c["op"] == Op.RECV)
        paired = len(fifo_pairs(c, sends, recvs, c["peer"][recvs])[0])
        fifo_s = time.perf_counter() - started
        started = time.perf_counter()
        dict_loop(c)
        loop_s = time.perf_counter() - started
        started = time.perf_counter()
        whole_check(c)
        check_s = time.perf_counter() - started
        assert paired <= n
        print(f"{n:>10,} | {fifo_s:>13.3f} | {loop_s:>13.3f} | {loop_s / fifo_s:>7.1f}x | {check_s:>15.3f}")


if __name__ == "__main__":
    main()
