"""One unit's per-chip ops to a scheduled template, with the names its slots stand for."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.codegen.alloc import Interval, first_fit
from compiler.codegen.attention import lower_sequence_shards
from compiler.codegen.collectives import Collectives, Level
from compiler.codegen.emit import Emitter, Slot
from compiler.codegen.overlap import lower_overlapped
from compiler.codegen.rules import EMIT
from compiler.codegen.schedule import schedule
from compiler.codegen.template import Ref, Rel, Space, Template
from compiler.partition.chaining import chained_operands
from compiler.partition.overlap import overlapped
from compiler.partition.shard_cost import is_resident
from ir.graph import Op, Value
from ir.isa import Fn
from ir.ops import Opcode
from targets.timing import Timing


@dataclass(frozen=True, slots=True)
class UnitCode:
    """A scheduled template and, slot by slot, the values it reads and writes."""

    template: Template
    params: tuple[Value, ...] = ()  # PARAM slots: params and caches
    ports_in: tuple[Value, ...] = ()  # PORT_IN slots
    ports_out: tuple[Value, ...] = ()  # PORT_OUT slots
    values: tuple[Value, ...] = ()  # every operand and result in op order: instances rename by position
    local_offsets: tuple[int, ...] = ()  # arena offset of each LOCAL slot
    arena_bytes: int = 0
    port_bytes: tuple[int, ...] = ()  # bytes of each PORT_OUT buffer (a collective may pad it)


def finish(t: Template, params=(), ports_in=(), ports_out=(), values=(), port_bytes=()) -> UnitCode:
    """Schedule `t` and lay out its LOCAL slots by liveness."""
    schedule(t)
    offsets, span = first_fit(_lifetimes(t))
    ports_out = tuple(ports_out)
    sizes = tuple(port_bytes) or tuple(v.type.nbytes for v in ports_out)
    return UnitCode(t, tuple(params), tuple(ports_in), ports_out, tuple(values), tuple(offsets), span, sizes)


def _lifetimes(t: Template) -> list[Interval]:
    """Each LOCAL slot lives from its first write's issue to its last read's end."""
    start = [None] * len(t.local_bytes)
    end = [0] * len(t.local_bytes)
    for ins in t.instrs:
        if ins.dst is not None and ins.dst.space is Space.LOCAL:
            s = ins.dst.slot
            start[s] = ins.issue if start[s] is None else min(start[s], ins.issue)
            end[s] = max(end[s], ins.end)
        if ins.src is not None and ins.src.space is Space.LOCAL:
            end[ins.src.slot] = max(end[ins.src.slot], ins.end)
    return [Interval(s if s is not None else 0, max(e, (s or 0) + 1), b)
            for s, e, b in zip(start, end, t.local_bytes, strict=True)]


def unit_code(name: str, ops: Sequence[Op], timing: Timing, inputs: Sequence[str], exported: set[str],
              levels: list[Level]) -> UnitCode:
    """Lower and schedule one unit. `inputs` are the graph's input names (INPUT slots);
    `exported` the results a later unit or the graph's outputs read."""
    t = Template(name, timing)
    slots, params, ports_in = _slots(ops, inputs)
    e = Emitter(t, slots, exported, tp=math.prod(lv.group for lv in levels))
    coll = Collectives(e, levels)
    values = {v.name: v for op in ops for v in (*op.operands, *op.results)}
    pairs, skip = overlapped(ops), set()
    for i, (op, chained) in enumerate(zip(ops, chained_operands(ops, timing.panel), strict=True)):
        e.take_fresh(chained)  # partition.chaining, as the plan counts it
        if i in skip:
            continue
        if i in pairs and op.results[0].name not in exported and lower_overlapped(e, coll, op, ops[pairs[i]]):
            skip.add(pairs[i])  # the all-reduce went with its matmul's pieces
        elif op.opcode in (Opcode.ALLREDUCE, Opcode.ALLGATHER):
            _collective(e, coll, op)
        elif op.opcode is Opcode.ARGMAX and op.attr.get("shards", 1) > 1:
            _sharded_argmax(e, coll, op)
        elif op.opcode is Opcode.ATTENTION and op.attr.get("seq_shards", 1) > 1:
            lower_sequence_shards(e, coll, op)
        else:
            EMIT[op.opcode](e, op)
    flat = [v for op in ops for v in (*op.operands, *op.results)]
    return finish(t, (values[n] for n in params), (values[n] for n in ports_in),
                  (values[n] for n in e.ports_out), flat, e.port_bytes())


def _slots(ops: Sequence[Op], inputs: Sequence[str]) -> tuple[dict[str, Slot], list[str], list[str]]:
    defined = {r.name for op in ops for r in op.results}
    slots: dict[str, Slot] = {}
    params: list[str] = []
    ports: list[str] = []
    for op in ops:
        for i, v in enumerate(op.operands):
            if v.name in defined or v.name in slots:
                continue
            if is_resident(op, i):
                slots[v.name] = Slot(Ref(Space.PARAM, len(params)), v.type.nbytes)
                params.append(v.name)
            elif v.name in inputs:
                slots[v.name] = Slot(Ref(Space.INPUT, list(inputs).index(v.name)), v.type.nbytes)
            else:
                slots[v.name] = Slot(Ref(Space.PORT_IN, len(ports)), v.type.nbytes)
                ports.append(v.name)
    return slots, params, ports


def _collective(e: Emitter, coll: Collectives, op: Op) -> None:
    x, out = op.operands[0], op.results[0]
    e.result(out)
    if op.opcode is Opcode.ALLREDUCE:
        shape = out.type.shape
        last = coll.allreduce(x.name, out.name, out.type.nbytes, out.type.numel, len(shape) < 2 or shape[0] == 1)
    elif op.attr["group"] < e.tp or out.type.shape[0] > 1:
        # feature shards side by side in every row (of a kv head's slices: among the chips sharing it)
        sub = coll.subgroup(op.attr["group"]) if op.attr["group"] < e.tp else coll
        rows = out.type.shape[0]
        last = sub.gather_rows(x.name, out.name, rows, x.type.nbytes // rows)[-1]
        coll.rejoin(sub)
    else:
        last = coll.allgather(x.name, out.name, out.type.nbytes)
    e.done(out, last)


def _sharded_argmax(e: Emitter, coll: Collectives, op: Op) -> None:
    """Each chip's best (id, value) pair per row over its vocabulary shard (ids from the vocabulary
    on, the last shard's padding, never win: ARGBEST's limit), an all-gather of the pairs, then every
    chip picks the best: ids are global and the same on every chip."""
    x, out = op.operands[0], op.results[0]
    rows, shards = out.type.numel, op.attr["shards"]
    width = x.type.numel // rows
    pairs, gathered = Value(f"{out.name}.pairs", out.type), Value(f"{out.name}.all", out.type)
    for v, nbytes in ((pairs, rows * 8), (gathered, rows * 8 * shards)):
        e.slots[v.name] = Slot(e.t.local(nbytes), nbytes)
    r = e.read(x.name)
    i, s = e.vop(Fn.ARGBEST, rows, width, r, bytes_in=x.type.nbytes, base=Rel(per_rank=width),
                 args={"limit": op.attr["vocab"]})
    e.done(pairs, e.write(pairs.name, s, i, rows * 8))
    e.done(gathered, coll.allgather(pairs.name, gathered.name, rows * 8 * shards))
    i, s = e.vop(Fn.PICK, rows, shards, e.read(gathered.name), bytes_in=rows * 8 * shards)
    e.result(out)
    e.done(out, e.write(out.name, s, i, out.type.nbytes))
