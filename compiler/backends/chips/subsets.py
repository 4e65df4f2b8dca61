"""Subset stages the search may take (passes.subset: a layer's attention on the first a of a stage's t chips, its
MLP over all t with fewer features on those a): only where no stage of at most t chips in the whole layout holds
the same layers, so they save chips or add nothing. Per run of layers and stage size t (whole nodes): a is the
widest group of whole nodes below t whose chips share each kv head's cache by sequence within a node
(passes.shard.seq_split), and the attention chips keep the most MLP features (whole FEATURE_ALIGN runs, at most
an even share) that leave them room for the run's layers, the others the rest of the features. A layer whose
attention is a unit of its own (DeepSeek's) has its other unit (layer_rest) on all t, evenly."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from compiler.partition.candidates import Candidate, resident_total
from compiler.partition.cost import Breakdown
from compiler.partition.units import Unit
from compiler.passes.shard import FEATURE_ALIGN, allowed_tp, seq_split, splits_kv
from compiler.passes.subset import attention_split, has_attention, mlp_features
from ir.graph import Graph
from ir.ops import Opcode

MAX_LAYERS = 8  # a subset stage's layers at most (the runs the search considers)


def attention_group(ops: list, t: int, node: int, allowed: Callable[[list], set[int]] | None = None) -> int | None:
    """The subset's a for a layer on t chips (see the module docstring), or None. A layer's attention unit with
    nothing past it (DeepSeek's MLA) takes the same a; its latent cache is whole on every attention chip.
    `allowed(head)`: passes.shard.allowed_tp of the attention part up to t or more (the search's, kept per kind);
    by default computed here."""
    end = attention_split(ops)
    if end is None or (end < len(ops) and mlp_features(ops) is None):
        return None
    head = ops[:end]
    groups = allowed(head) if allowed else set(allowed_tp(head, t))
    att = next((op.attr for op in head if op.opcode is Opcode.ATTENTION), None)
    for a in range(t - node, 0, -node):
        # kv-head blocks of whole nodes lower too, but their exchanges across nodes run far slower than the plan
        # counts them (llama-3.1-405b's attention on 128 chips, blocks of 16: 28.1 us a layer scheduled, 3.8 on 64)
        if a in groups and splits_kv(head, a) and (
                att is None or seq_split(att["heads"], att["kv_heads"], a) <= node):
            return a
    return None


def layer_rest(graph: Graph, scope: str) -> bool:
    """Whether a unit is the rest of a layer whose attention is a unit of its own (frontend block_units:
    DeepSeek's `layers.N.moe_shared` beside `layers.N`): no attention, and its layer's scope is a unit too.
    A subset stage runs it on every chip."""
    parent = scope.rpartition(".")[0]
    return parent in graph.scopes() and not has_attention(list(graph.ops_in(scope)))


def subset_candidates(units: list[Unit], graph: Graph, cands: list[Candidate], node: int, usable: int,
                      sized: Callable[[Candidate], Candidate | None]) -> list[Candidate]:
    """Subset candidates over runs of up to MAX_LAYERS layers: per run, the narrowest stage size past every
    whole-layout candidate of it that `sized` (the layout's: fills in a candidate's share, memory and decode, or
    None where it does not fit `usable` bytes a chip) takes, unless the run split in two (each part as a stage, or
    split in turn) needs fewer chips (in whole nodes), or as many and decodes no slower: subset stages are there
    to save chips (DeepSeek-V3's 3 units on 224 chips, a layer's experts and the next one's attention and
    experts, against 112 + 104)."""
    narrowest: dict[tuple[int, int], int] = {}
    fewest: dict[tuple[int, int], tuple[int, int]] = {}  # run -> its fewest (chips in whole nodes, ps) known
    for c in cands:
        narrowest[c.first, c.stop] = min(narrowest.get((c.first, c.stop), c.tp), c.tp)
        fewest[c.first, c.stop] = min(fewest.get((c.first, c.stop), (2**62, 0)), (-(-c.tp // node) * node,
                                                                                     c.latency_ps))
    groups = _Groups(graph, node, max((t for u in units for t in u.sizes), default=1))
    rests: dict[str, bool] = {}  # scope -> layer_rest
    alone: dict[str, bool] = {}  # scope -> an attention unit with nothing past it
    out = []
    for first in reversed(range(len(units))):  # the runs past `first` known before any that holds them
        for stop in range(first + 1, min(len(units), first + MAX_LAYERS) + 1):
            run = units[first:stop]
            for u in run:
                if u.scope not in alone:
                    ops = list(graph.ops_in(u.scope))
                    alone[u.scope] = attention_split(ops) == len(ops)
                    rests[u.scope] = layer_rest(graph, u.scope)
            # t need not split an attention unit with nothing past it (only its a does): the others' sizes
            spread = [set(u.sizes) for u in run if not alone[u.scope]]
            sizes = sorted(set.intersection(*spread)) if spread else []
            least = resident_total(run)  # no layout holds the run on fewer chips than its bytes need
            held = min((x for x in (fewest.get((first, stop)), _split(fewest, first, stop)) if x), default=None)
            cap = held[0] if held else 2**62  # more chips than the run split needs save none
            wide = [t for t in sizes if t > node and t % node == 0 and t < narrowest.get((first, stop), 2**62)
                    and t * usable >= least]
            attending = [u for u in run if not rests[u.scope]]
            within = [t for t in wide if t <= cap] if attending else []
            found = _narrowest_fit(within, functools.partial(_candidate, first, stop, attending, groups, sized))
            if found is None and len(within) == len(wide) and (first, stop) not in narrowest:
                break  # nothing holds the run: more layers only need more
            if found is not None and (held is None or (found.tp, found.latency_ps) < held):
                out.append(found)
                held = (found.tp, found.latency_ps)
            if held is not None:
                fewest[first, stop] = held
    return out


@dataclass
class _Groups:
    """attention_group per unit kind and stage size, each attention part's allowed_tp (up to `top`) kept."""

    graph: Graph
    node: int
    top: int
    of: dict[tuple[int, int], int | None] = field(default_factory=dict)  # (kind, t) -> a
    heads: dict[int, set[int]] = field(default_factory=dict)  # kind -> its attention part's allowed_tp

    def group(self, units: list[Unit], t: int) -> int | None:
        """The a every unit takes on t chips, or None."""
        for u in units:
            if (u.kind, t) not in self.of:
                self.of[u.kind, t] = attention_group(list(self.graph.ops_in(u.scope)), t, self.node,
                                                     lambda head, k=u.kind: self.heads.setdefault(
                                                         k, set(allowed_tp(head, self.top))))
        a = {self.of[u.kind, t] for u in units}
        return a.pop() if len(a) == 1 and None not in a else None


def _candidate(first: int, stop: int, attending: list[Unit], groups: _Groups,
               sized: Callable[[Candidate], Candidate | None], t: int) -> Candidate | None:
    a = groups.group(attending, t)
    return None if a is None else sized(Candidate(first, stop, t, 0, 0, Breakdown(), split=True, attention_tp=a))


def _narrowest_fit(sizes: list[int], make: Callable[[int], Candidate | None]) -> Candidate | None:
    """The narrowest of `sizes` (ascending) `make` takes, the widest tried first: where it does not fit, fewer
    chips (each holding more) do not either."""
    widest = make(sizes[-1]) if sizes else None
    if widest is None:
        return None
    return next((c for t in sizes[:-1] if (c := make(t)) is not None), widest)


def _split(fewest: dict[tuple[int, int], tuple[int, int]], first: int, stop: int) -> tuple[int, int] | None:
    """The fewest (chips, ps) of the run held as two runs, [first, m) and [m, stop), each as `fewest` holds it
    (each stage's decode counts the hand-off into it)."""
    return min(((a + b, x + y) for m in range(first + 1, stop) if (first, m) in fewest and (m, stop) in fewest
                for (a, x), (b, y) in [(fewest[first, m], fewest[m, stop])]), default=None)


def shares(features: int, t: int) -> list[int | None]:
    """The attention chips' MLP features to try, most first: an even share (None), then whole
    FEATURE_ALIGN runs below it."""
    even = features // t // FEATURE_ALIGN * FEATURE_ALIGN
    return [None, *range(even, 0, -FEATURE_ALIGN)]
