"""Message pairing speed in timing mode: FIFO matching by sorts (targets/messages.py) against the
dict-per-message loop it replaced, on synthetic Programs of N messages over 64 chips.

    python benchmarks/message_pairing.py [--messages 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ir.isa import Op
from ir.program import empty_columns
from targets.messages import fifo_pairs


def columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n SENDs and their n RECVs: random (sender, receiver) pairs of 64 chips, distinct tags per pair."""
    rng = np.random.default_rng(seed)
    c = empty_columns(2 * n)
    a, b = rng.integers(0, 64, n), rng.integers(0, 64, n)
    tag = np.arange(n) % 4096
    issue = rng.integers(0, 10**6, n)
    c["op"][:n], c["chip"][:n], c["peer"][:n], c["tag"][:n], c["issue"][:n] = Op.SEND, a, b, tag, issue
    c["op"][n:], c["chip"][n:], c["peer"][n:], c["tag"][n:], c["issue"][n:] = Op.RECV, b, a, tag, issue + 500
    return c


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
    print(f"{'messages':>10} | {'fifo sort (s)':>13} | {'dict loop (s)':>13} | {'speed-up':>8}")
    for n in (int(x) for x in args.messages.split(",")):
        c = columns(n)
        started = time.perf_counter()
        sends, recvs = np.flatnonzero(c["op"] == Op.SEND), np.flatnonzero(c["op"] == Op.RECV)
        paired = len(fifo_pairs(c, sends, recvs, c["peer"][recvs])[0])
        fifo_s = time.perf_counter() - started
        started = time.perf_counter()
        dict_loop(c)
        loop_s = time.perf_counter() - started
        assert paired <= n
        print(f"{n:>10,} | {fifo_s:>13.3f} | {loop_s:>13.3f} | {loop_s / fifo_s:>7.1f}x")


if __name__ == "__main__":
    main()
