"""ShardTensorParallel: per-chip shapes, inserted collectives, and what the cost model reads off them."""

import pytest

from compiler.codegen.alloc import align
from compiler.partition.shard_cost import shard_cost
from compiler.passes.fuse import SEP, fuse_siblings, parts
from compiler.passes.shard import ShardTensorParallel, allowed_tp
from ir.ops import Opcode
from tests.layer_fixture import llama_like

GRAPH = llama_like()
LAYER = list(GRAPH.ops_in("layers.0"))


def _ops(scope, t):
    return ShardTensorParallel(t)(list(GRAPH.ops_in(scope)))


def test_group_sizes_divide_heads_and_features():
    # 4 query heads, 2 kv heads, ffn 176 = 16 * 11: any group, padded where it does not divide
    # (passes.shard.head_case, feature_width: 3 chips take 2 query heads each, every one with a copy of
    # its kv head, and 64 + 64 + 48 features; past 4 chips the extra chips hold no heads, up to 8).
    assert allowed_tp(LAYER, 16) == list(range(1, 9))
    assert allowed_tp(list(GRAPH.ops_in("embed")), 5) == [1, 2, 3, 4, 5]  # vocab rows: any split


def test_one_chip_is_the_identity():
    assert _ops("layers.0", 1) == LAYER


@pytest.mark.parametrize("t", [2, 4])
def test_layer_shards_like_megatron(t):
    ops = _ops("layers.0", t)
    collectives = [(op.opcode, op.attr["group"]) for op in ops if op.opcode in (Opcode.ALLREDUCE, Opcode.ALLGATHER)]
    slices = [(Opcode.ALLGATHER, 2)] * 2 if t == 4 else []  # t=4: k's and v's halves from the chip sharing them
    assert collectives == [*slices, (Opcode.ALLREDUCE, t), (Opcode.ALLREDUCE, t)]  # after o_proj, down_proj
    attention = next(op for op in ops if op.opcode is Opcode.ATTENTION)
    assert attention.attr["heads"] == 4 // t
    assert attention.attr["kv_heads"] == max(1, 2 // t)  # t=4: each chip keeps one whole kv head ...
    runs = max(1, t // 2)  # ... and the 2 chips sharing it hold half its positions each
    assert attention.attr.get("seq_shards", 1) == runs
    assert attention.operands[3].type.shape == (1, 32 // runs, 16 * max(1, 2 // t))
    down = [op for op in ops if op.opcode is Opcode.MATMUL][-1]
    assert down.operands[1].type.shape == (176 // t, 64)


def test_vocab_parallel_embed_and_head():
    embed = _ops("embed", 3)
    assert embed[0].operands[1].type.shape == (86, 64) and embed[0].attr["shards"] == 3
    assert embed[-1].opcode is Opcode.ALLREDUCE  # the partial rows are completed before leaving the unit
    head = _ops("head", 4)
    assert head[-1].opcode is Opcode.ARGMAX and head[-1].attr["shards"] == 4


def test_costs_split_weights_and_kv_by_sequence():
    one, two, four = (shard_cost(LAYER, t, alignment=320, tile=320) for t in (1, 2, 4))
    # Each tensor starts on a 320-byte vector boundary, as the allocator places it: q|k|v one block (passes.fuse:
    # 128 columns in one 320-wide tile, not three); gate and up (176 columns each) take two tiles either way
    sizes = {p.name: p.type.nbytes for p in GRAPH.params}
    held = {v.name for op in fuse_siblings(LAYER, 320) for v in op.operands if all(n in sizes for n in parts(v.name))}
    assert {n for n in held if SEP in n} == {"layers.0.q_proj.weight+layers.0.k_proj.weight+layers.0.v_proj.weight"}
    assert one.weight_bytes == sum(align(sum(sizes[n] for n in parts(name))) for name in held)
    assert one.collectives == ()
    kv = [s.type.nbytes for s in GRAPH.state if s.name.startswith("layers.0.")]
    assert one.state_bytes == sum(map(align, kv))
    assert two.state_bytes == sum(align(b // 2) for b in kv)
    assert four.state_bytes == sum(align(b // 4) for b in kv)  # 2 kv heads on 4 chips: half a head's positions
    # two all-reduces, and over the 2 chips sharing a kv head: k's and v's halves, then the sequence
    # shards' queries in and partials out
    assert [(c.kind, c.group) for c in four.collectives] == [("allgather", 2)] * 4 + [("allreduce", 4)] * 2
    assert four.weight_bytes < two.weight_bytes / 1.9  # the kv projections split too, not repeated
    assert sum(w.flops for w in four.work) < sum(w.flops for w in one.work) / 3


def test_whole_graph_shards_scope_by_scope():
    from compiler.passes.shard import shard_graph

    chip = shard_graph(GRAPH, 2)
    assert [p.name for p in chip.params] == [p.name for p in GRAPH.params]
    q = next(p for p in chip.params if p.name == "layers.0.q_proj.weight")
    assert q.type.shape == (64, 32)
    assert chip.outputs[1].type == GRAPH.outputs[1].type  # next-token ids are whole on every chip
    assert sum(op.opcode is Opcode.ALLREDUCE for op in chip.ops) == 1 + 2 * 2  # embed, then 2 per layer
    defined = {v.name for v in (*chip.inputs, *chip.params, *chip.state)}
    for op in chip.ops:  # SSA holds across scopes: every operand is the per-chip value defined earlier
        for v in op.operands:
            assert v.name in defined
        defined.update(r.name for r in op.results)
