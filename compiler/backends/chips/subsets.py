"""Subset stages the search may take (passes.subset: a layer's attention on the first a of a stage's t chips, its
MLP over all t with fewer features on those a): only where no stage of at most t chips in the whole layout holds
the same layers, so they save chips or add nothing. Per run of layers and stage size t (whole nodes): a is the
widest group of whole nodes below t whose chips share each kv head's cache by sequence within a node
(passes.shard.seq_split), and the attention chips keep the most MLP features (whole FEATURE_ALIGN runs, at most
an even share) that leave them room for the run's layers, the others the rest of the features."""

from __future__ import annotations

from collections.abc import Callable

from compiler.partition.candidates import Candidate, resident_total
from compiler.partition.cost import Breakdown
from compiler.partition.units import Unit
from compiler.passes.shard import FEATURE_ALIGN, allowed_tp, seq_split, splits_kv
from compiler.passes.subset import attention_split, mlp_features
from ir.graph import Graph
from ir.ops import Opcode

MAX_LAYERS = 8  # a subset stage's layers at most (the runs the search considers)


def attention_group(ops: list, t: int, node: int) -> int | None:
    """The subset's a for a layer on t chips (see the module docstring), or None."""
    end = attention_split(ops)
    if end is None or mlp_features(ops) is None:
        return None
    head = ops[:end]
    att = next(op for op in head if op.opcode is Opcode.ATTENTION).attr
    for a in range(t - node, 0, -node):
        # kv-head blocks of whole nodes lower too, but their exchanges across nodes run far slower than the plan
        # counts them (llama-3.1-405b's attention on 128 chips, blocks of 16: 28.1 us a layer scheduled, 3.8 on 64)
        if a in allowed_tp(head, a) and splits_kv(head, a) and seq_split(att["heads"], att["kv_heads"], a) <= node:
            return a
    return None


def subset_candidates(units: list[Unit], graph: Graph, cands: list[Candidate], node: int, usable: int,
                      sized: Callable[[Candidate], Candidate | None]) -> list[Candidate]:
    """Subset candidates over runs of up to MAX_LAYERS layers: per run, the narrowest stage size past every
    whole-layout candidate of it that `sized` (the layout's: fills in a candidate's share, memory and decode, or
    None where it does not fit `usable` bytes a chip) takes."""
    narrowest: dict[tuple[int, int], int] = {}
    for c in cands:
        narrowest[c.first, c.stop] = min(narrowest.get((c.first, c.stop), c.tp), c.tp)
    groups: dict[tuple[int, int], int | None] = {}  # (kind, t) -> a
    out = []
    for first in range(len(units)):
        for stop in range(first + 1, min(len(units), first + MAX_LAYERS) + 1):
            run = units[first:stop]
            sizes = sorted(set.intersection(*(set(u.sizes) for u in run)))
            least = resident_total(run)  # no layout holds the run on fewer chips than its bytes need
            wide = [t for t in sizes if t > node and t % node == 0 and t < narrowest.get((first, stop), 2**62)
                    and t * usable >= least]
            found = None
            for t in wide:
                for u in run:
                    if (u.kind, t) not in groups:
                        groups[u.kind, t] = attention_group(list(graph.ops_in(u.scope)), t, node)
                a = {groups[u.kind, t] for u in run}
                if len(a) != 1 or None in a:
                    continue
                found = sized(Candidate(first, stop, t, 0, 0, Breakdown(), split=True, attention_tp=a.pop()))
                if found is not None:
                    break
            if found is None and (first, stop) not in narrowest:
                break  # nothing holds the run: more layers only need more
            if found is not None:
                out.append(found)
    return out


def shares(features: int, t: int) -> list[int | None]:
    """The attention chips' MLP features to try, most first: an even share (None), then whole
    FEATURE_ALIGN runs below it."""
    even = features // t // FEATURE_ALIGN * FEATURE_ALIGN
    return [None, *range(even, 0, -FEATURE_ALIGN)]
