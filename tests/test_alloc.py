"""The SRAM allocator: buffers alive at the same time never share a byte."""

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.codegen.alloc import ALIGN, Interval, first_fit, pack

intervals = st.lists(
    st.builds(lambda s, d, size: Interval(s, s + d, size), st.integers(0, 500), st.integers(1, 200),
              st.integers(1, 5000)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(intervals)
def test_live_buffers_never_overlap(ivs):
    offsets, span = first_fit(ivs)
    for i, a in enumerate(ivs):
        assert offsets[i] % ALIGN == 0 and offsets[i] + a.size <= span
        for j in range(i):
            b = ivs[j]
            if a.start < b.end and b.start < a.end:  # alive together
                assert offsets[i] + a.size <= offsets[j] or offsets[j] + b.size <= offsets[i]


@settings(max_examples=100, deadline=None)
@given(intervals)
def test_span_is_at_most_the_sum(ivs):
    _, span = first_fit(ivs)
    assert span <= sum(-(-iv.size // ALIGN) * ALIGN for iv in ivs)


def test_disjoint_lifetimes_share_space():
    offsets, span = first_fit([Interval(0, 10, 1000), Interval(10, 20, 1000)])
    assert offsets == [0, 0] and span == 1280


def test_pack_is_aligned_and_in_order():
    addrs, end = pack([1, 320, 321], base=640)
    assert addrs == [640, 960, 1280] and end == 1920
