"""One instantiation for chips and wafers: a template's streams land on their own "chips" from the
instance's first, a wafer role's activation pair (P, Q) is traded where the instance says so, and
every distinct block is stored once however many start cycles place it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.codegen.blocks import Blocks
from compiler.codegen.instantiate import instantiate
from compiler.codegen.template import Instr, Peer, Ref, Space, Template
from ir.contract import Route
from ir.isa import Fn, Op
from targets import load_target
from targets.timing import Timing

P, Q = 1, 3
WSE3 = load_target("wse3")
TIMING = Timing.of(WSE3)


def _region_template(streams: int) -> Template:
    """Every stream adds its result to itself (P -> Q) at cycle 0; stream k then sends it to stream 0."""
    t = Template("unit", TIMING, physical=True, pair=(P, Q))
    for k in range(streams):
        t.add(Instr(Op.VOP, 4, fn=Fn.ADD, m=1, n=8, src_bytes=16, s_a=P, s_out=Q, stream=k, issue=0))
        if k:
            t.add(Instr(Op.SEND, 2, src_bytes=16, s_a=Q, peer=Peer("stream", 0, 1, 1, 0), tag=0, stream=k,
                        issue=4, route=Route.ROWS, imm=0))
    t.add(Instr(Op.MXM, 3, m=1, k=8, n=8, src=Ref(Space.PARAM, 0, 64), src_bytes=128, s_b=Q, s_out=P, issue=8))
    return t


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(0, 50), st.data())
def test_streams_land_on_their_own_chips_with_their_pair_traded(streams, first, data):
    swap = tuple(data.draw(st.lists(st.booleans(), min_size=streams, max_size=streams)))
    starts = np.array(sorted(data.draw(st.sets(st.integers(0, 10_000), min_size=1, max_size=3))), np.int64)
    blocks = Blocks()
    instantiate(blocks, _region_template(streams), first, 1, starts, starts * 0 + 7, {}, lambda ref: 1000, WSE3,
                swap=swap)
    program = blocks.program("decode", "wse3", first + streams, TIMING.clock_hz, {}, dialect="roles")
    c = program.cols
    # Streams that run the same rows (every sender alike but for its swap) share one block.
    assert program.blocks == len({(k == 0, swap[k]) for k in range(streams)})
    assert program.instances == streams * len(starts)
    assert sorted(set(c["chip"].tolist())) == list(range(first, first + streams))
    for k in range(streams):
        mine = c["chip"] == first + k
        vop = mine & (c["op"] == Op.VOP)
        assert (c["s_a"][vop] == (Q if swap[k] else P)).all() and (c["s_out"][vop] == (P if swap[k] else Q)).all()
        assert sorted(c["issue"][vop].tolist()) == starts.tolist()
        send = mine & (c["op"] == Op.SEND)
        assert (c["peer"][send] == first).all() and (c["tag"][send] == 7).all()
        assert (c["route"][send] == Route.ROWS).all()
    mxm = c["op"] == Op.MXM
    assert (c["chip"][mxm] == first).all() and (c["src"][mxm] == 1064).all()
