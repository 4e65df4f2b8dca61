"""The physical decode bound (README: "What the figures mean"), recomputed by hand from the lpu's numbers."""

import pytest

from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan

LPU_CLOCK = 900e6
INSTALL_PER_S = 10_240 * LPU_CLOCK  # 409,600 weights in 40 cycles
SRAM_PER_S = 2 * 44 * 2 * 320 * LPU_CLOCK  # 56,320 B/cycle
STREAMS_PER_S = 2 * 32 * 320 * LPU_CLOCK  # 20,480 B/cycle
HOP_S = 216 / LPU_CLOCK  # one C2C hop


@pytest.fixture(scope="module")
def plan():
    return make_plan("llama-3.1-70b", "lpu", CompileOptions(precision="int8")).to_dict()


def _layer_weights_per_chip(tp: int, split: bool = True) -> int:
    """Llama-3.1-70B (hidden 8192, 64 heads, 8 kv heads of 128, intermediate 28672), one chip of tp; past 8
    chips a kv head's chips take slices of it (`split`) or each holds it whole."""
    kv = 128 * 8 // tp if split or tp <= 8 else 128
    hidden, q, inter = 8192, 64 * 128 // tp, 28672 // tp
    return hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * inter


def _gather_hops(tp: int, exchanges: int) -> int:
    """A layer's kv-head gathers past 8 chips (tp / 8 chips share each of the 8 kv heads), `exchanges` of them
    one after another: slices that go out together (none waits for another) are one exchange. Each takes one
    hop where a kv head's chips divide a node, two where some block of them must straddle two nodes (5 or 6
    chips: local, then global; a direct link joins too few of their pairs)."""
    share = tp // 8
    if share <= 1:
        return 0
    return exchanges * (1 if 8 % share == 0 else 2)


def test_the_bound_follows_its_definition_term_by_term(plan):
    layer_stages = [s for s in plan["stages"] if s["layers"]]
    assert layer_stages
    for s in layer_stages:
        terms, layers, tp = s["decode_bound_terms"], s["layers"][1] - s["layers"][0] + 1, s["tp"]
        # int8 weights install one byte each; the fp16 KV cache of the chip's kv heads at 4096 tokens, or
        # past the 8 kv heads, its 1 / runs of one kv head's positions (runs = tp / 8 chips share each) where
        # the stage splits caches by sequence, else the whole kv head's
        split = s.get("kv_layout") == "split"
        runs = max(1, tp // 8) if split else 1
        head = 128256 * 8192 // tp if "head" in s["units"] else 0  # the lm head's vocabulary shard
        assert terms["install_bytes"] == layers * _layer_weights_per_chip(tp, split) + head
        assert terms["cache_bytes"] == layers * 2 * (4096 // runs) * max(128, 8 * 128 // tp) * 2
        assert terms["install_us"] == pytest.approx(terms["install_bytes"] / INSTALL_PER_S * 1e6, rel=1e-3)
        assert terms["cache_us"] == pytest.approx(terms["cache_bytes"] / SRAM_PER_S * 1e6, rel=1e-3)
        assert terms["stream_us"] == pytest.approx(terms["stream_bytes"] / STREAMS_PER_S * 1e6, rel=1e-3)
        # only wire latency no schedule can hide: one hop into the stage, one exchange per all-reduce (2 a
        # layer: one hop inside a node of 8 chips; across nodes local, global, local: 3), and the gathers
        # among the adjacent chips sharing a kv head
        reduce_hops = 1 if tp <= 8 else 3
        gathers = _gather_hops(tp, 3) if split else 0  # k's and v's slices together, the queries, the partials
        # the first stage has no hop in; the embedding's partial rows and the head's best ids are one
        # all-reduce each
        ends = sum(u in s["units"] for u in ("embed", "head"))
        hops = (0 if "embed" in s["units"] else 1) + ends * reduce_hops + layers * (2 * reduce_hops + gathers)
        assert terms["wire_us"] == pytest.approx(hops * HOP_S * 1e6, rel=1e-3)
        slowest = max(terms[k] for k in ("install_us", "cache_us", "stream_us", "compute_us"))
        assert slowest == terms["install_us"]  # batch-1 decode: the weights' install path binds
        assert s["decode_bound_us"] == pytest.approx(slowest + terms["wire_us"], rel=1e-3)
    total = sum(s["decode_bound_us"] for s in plan["stages"])
    assert plan["decode"]["latency_bound_us"] == pytest.approx(total, rel=2e-3)


def test_the_estimate_stays_above_the_bound_with_its_overheads_named(plan):
    for s in plan["stages"]:
        assert s["decode_us"] >= s["decode_bound_us"]
        assert 0 <= s["decode_tiles_us"] < s["decode_us"]
    decode = plan["decode"]
    assert decode["latency_us"] > decode["latency_bound_us"]
    parts = decode["breakdown_us"]
    assert parts["pipeline_latency"] > 0 and parts["links"] > 0


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@pytest.fixture(scope="module")
def mixtral():
    return make_plan("mixtral-8x7b", "lpu", CompileOptions(precision="int8")).to_dict()


def _mixtral_layer_per_chip(tp: int, split: bool = True) -> tuple[int, int]:
    """Mixtral-8x7B (hidden 4096, 32 heads and 8 kv heads of 128, 8 experts of 14336, top 2, fp16 cache at
    4096 tokens), one chip of tp with every expert sliced: (weights one decode step multiplies, cache bytes).
    Past 8 chips, each kv head's tp / 8 chips take ceil shares of its query features (4 heads of 128), of its
    k and v features and of its positions; the router is whole on every chip; the busiest chip's two routed
    experts are two slices of ceil(14336 / tp) features of gate, up and down. Without `split` (caches by
    sequence) each of a kv head's chips holds its k, v and cache whole."""
    assert tp % 8 == 0  # the plan's stages: whole kv heads' groups
    hidden, runs = 4096, tp // 8
    kv_runs = runs if split else 1
    # from twice the query heads (64 chips) a chip takes whole query heads, padded, not slices of them
    # (passes.shard.query_slice)
    q = _ceil(4 * 128, runs) if tp < 64 else _ceil(4, runs) * 128
    kv = _ceil(128, kv_runs)
    attention = hidden * (2 * q + 2 * kv)
    experts = 2 * 3 * hidden * _ceil(14336, tp)
    cache = 2 * _ceil(4096, kv_runs) * 128 * 2
    return attention + hidden * 8 + experts, cache


def test_mixtrals_bound_counts_two_routed_expert_slices_a_layer(mixtral):
    """The MoE bound by hand: worst-case routing (both routed experts' slices on every chip), the attention's
    kv-head shares, two all-reduces a layer and the kv heads' four gathers."""
    assert {s["experts"] for s in mixtral["stages"]} == {"sliced"}
    for s in mixtral["stages"]:
        terms, layers, tp = s["decode_bound_terms"], s["layers"][1] - s["layers"][0] + 1, s["tp"]
        split = s.get("kv_layout") == "split"
        weights, cache = _mixtral_layer_per_chip(tp, split)
        head = _ceil(32000, tp) * 4096 if "head" in s["units"] else 0  # int8: a byte a weight, padded ids held
        assert terms["install_bytes"] == layers * weights + head
        assert terms["cache_bytes"] == layers * cache
        assert terms["install_us"] == pytest.approx(terms["install_bytes"] / INSTALL_PER_S * 1e6, rel=1e-3)
        first, last = s["chip_range"]
        # an all-reduce past a node: 3 hops inside a group (local, global, local), 7 across two (a stage that
        # straddles groups to span fewer chips, placement.straddle_start)
        reduce_hops = 1 if tp <= 8 else 3 if first // 72 == last // 72 else 7
        # the key and value slices together, with the query slices below 64 chips (from 64 a chip's queries are
        # whole heads, gathered on their own), then the partials
        gathers = _gather_hops(tp, 3 if tp >= 64 else 2) if split else 0
        ends = sum(u in s["units"] for u in ("embed", "head"))
        hops = (0 if "embed" in s["units"] else 1) + ends * reduce_hops + layers * (2 * reduce_hops + gathers)
        assert terms["wire_us"] == pytest.approx(hops * HOP_S * 1e6, rel=1e-3)
        slowest = max(terms[k] for k in ("install_us", "cache_us", "stream_us", "compute_us"))
        assert s["decode_bound_us"] == pytest.approx(slowest + terms["wire_us"], rel=1e-3)
    total = sum(s["decode_bound_us"] for s in mixtral["stages"])
    assert mixtral["decode"]["latency_bound_us"] == pytest.approx(total, rel=2e-3)


def test_concurrent_gathers_count_once_in_the_wire():
    """llama-3.1-8b int8's 32-chip stage (28 layers and the head): per layer two all-reduces over 4 nodes at
    3 hops and three gather exchanges at one hop (4 chips share a kv head inside a node), the k and v slices'
    gathers counted once since neither waits for the other; one hop in, the head's best ids one all-reduce."""
    plan = make_plan("llama-3.1-8b", "lpu", CompileOptions(precision="int8")).to_dict()
    stage = next(s for s in plan["stages"] if s["tp"] == 32)
    layers = stage["layers"][1] - stage["layers"][0] + 1
    hops = 1 + layers * (2 * 3 + _gather_hops(32, 3)) + 3
    assert stage["decode_bound_terms"]["wire_us"] == pytest.approx(hops * HOP_S * 1e6, rel=1e-3)
