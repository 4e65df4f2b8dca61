"""Message matching (targets/messages.py): per (sender, receiver, tag) the k-th RECV takes the k-th SEND; where
routers multicast, every RECV naming (sender, tag) takes its first SEND."""

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


def _multicast(events: list[tuple[bool, int, int, int]]) -> dict[str, np.ndarray]:
    """One row per (is_send, stream, tag, issue): stream 0 or 1 sends, streams 2..4 receive from stream 0."""
    c = empty_columns(len(events))
    for i, (send, stream, tag, issue) in enumerate(events):
        c["op"][i] = Op.SEND if send else Op.RECV
        c["chip"][i], c["peer"][i] = (stream % 2, 2) if send else (2 + stream % 3, 0)
        c["tag"][i], c["issue"][i] = tag, issue
    return c


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 2), st.integers(0, 50)), max_size=40))
def test_a_multicast_receive_takes_the_first_send_of_its_sender_and_tag(events):
    """Where routers multicast (ir.contract.MULTICAST), a queue is (sender, tag) whoever receives: every
    RECV naming it takes its first SEND in issue order; the queue's other SENDs are left over."""
    c = _multicast(events)
    sends, recvs = np.flatnonzero(c["op"] == Op.SEND), np.flatnonzero(c["op"] == Op.RECV)
    paired_s, paired_r, extra_s, extra_r = fifo_pairs(c, sends, recvs, c["peer"][recvs], multicast=True)
    first = {}
    for s in sorted(sends.tolist(), key=lambda r: (c["issue"][r], r)):
        first.setdefault((int(c["chip"][s]), int(c["tag"][s])), s)
    expected = {(first[k], r) for r in recvs.tolist() if (k := (0, int(c["tag"][r]))) in first}
    assert {(int(a), int(b)) for a, b in zip(paired_s, paired_r, strict=True)} == expected
    assert set(extra_r.tolist()) == {r for r in recvs.tolist() if (0, int(c["tag"][r])) not in first}
    assert set(extra_s.tolist()) == set(sends.tolist()) - {s for s, _ in expected}
