"""FIFO message matching (targets/messages.py): per (sender, receiver, tag), the k-th RECV takes the k-th SEND."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ir.isa import Op
from ir.program import empty_columns
from targets.messages import fifo_pairs


def _columns(events: list[tuple[bool, int, int]]) -> dict[str, np.ndarray]:
    """One row per (is_send, queue, issue): sends from chip 0 to chip 1, receives on chip 1 from 0."""
    c = empty_columns(len(events))
    for i, (send, queue, issue) in enumerate(events):
        c["op"][i] = Op.SEND if send else Op.RECV
        c["chip"][i], c["peer"][i] = (0, 1) if send else (1, 0)
        c["tag"][i], c["issue"][i] = queue, issue
    return c


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 50)), max_size=40))
def test_the_kth_receive_of_a_queue_takes_its_kth_send(events):
    c = _columns(events)
    sends, recvs = np.flatnonzero(c["op"] == Op.SEND), np.flatnonzero(c["op"] == Op.RECV)
    paired_s, paired_r, extra_s, extra_r = fifo_pairs(c, sends, recvs, c["peer"][recvs])
    def in_order(rows, queue):
        return sorted((int(r) for r in rows if c["tag"][r] == queue), key=lambda r: (c["issue"][r], r))

    for queue in range(3):
        s, r = in_order(sends, queue), in_order(recvs, queue)
        n = min(len(s), len(r))
        expected = set(zip(s[:n], r[:n], strict=True))
        assert {(int(a), int(b)) for a, b in zip(paired_s, paired_r, strict=True) if c["tag"][a] == queue} == expected
        assert sorted(int(x) for x in extra_s if c["tag"][x] == queue) == sorted(s[n:])
        assert sorted(int(x) for x in extra_r if c["tag"][x] == queue) == sorted(r[n:])
    assert len(paired_s) + len(extra_s) == len(sends) and len(paired_r) + len(extra_r) == len(recvs)
