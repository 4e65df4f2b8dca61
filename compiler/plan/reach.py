"""Causal prefill: which cache prefix each prompt chunk reads, grouped into a few variants.

Chunk i of a prompt cut into chunks of c tokens holds positions i*c .. (i+1)*c - 1, so its attention
can see only the first (i+1)*c cache positions of its sequence: its *reach*. Each distinct reach is a
template of its own in the Program, so consecutive chunks are grouped into at most MAX_VARIANTS
variants, each run at the reach of its last chunk (a chunk never reads less than it needs). A
backend that streams the whole cache for every chunk (Backend.causal false) has one variant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_VARIANTS = 8  # distinct reaches a prefill Program holds templates for


@dataclass(frozen=True, slots=True)
class Variant:
    """`chunks` consecutive prefill chunks whose attention reads `reach` cache positions a sequence."""

    reach: int
    chunks: int

    def to_dict(self) -> dict[str, int]:
        return {"reach": self.reach, "chunks": self.chunks}


def variants(prompt: int, chunk: int, cache_tokens: int, causal: bool, limit: int = MAX_VARIANTS) -> list[Variant]:
    """The prompt's chunks in order, grouped into at most `limit` runs of nearly equal length; a run
    reads what its last chunk needs (up to the cache's length). Not causal: one run over the whole cache."""
    chunks = math.ceil(prompt / chunk)
    if not causal:
        return [Variant(cache_tokens, chunks)]
    groups = min(limit, chunks)
    ends = [(g + 1) * chunks // groups for g in range(groups)]
    starts = [0, *ends[:-1]]
    return [Variant(min(cache_tokens, end * chunk), end - start) for start, end in zip(starts, ends, strict=True)]


def chunk_variants(runs: Sequence[Variant]) -> list[int]:
    """The variant (index into `runs`) each chunk runs, chunk by chunk."""
    return [v for v, run in enumerate(runs) for _ in range(run.chunks)]


def pipelined(stage_s: Sequence[Sequence[float]], per_chunk: Sequence[int],
              trailing_s: Sequence[Sequence[float]] | None = None,
              holds_s: Sequence[Sequence[float]] | None = None, early_s: Sequence[float] | None = None) -> float:
    """Seconds until the last stage finishes the last chunk: a stage starts chunk i when it has finished
    chunk i - 1 and the previous stage has finished chunk i (its hand-off is part of the stage's time).
    `stage_s[v][s]`: stage s's time for a chunk of variant v; `per_chunk`: each chunk's variant.
    `trailing_s[v][s]`: the part of that time a trailing hand-off into stage s takes on the wires alone
    (cost.handoff_trails): it starts once the previous stage has finished the chunk and the wires have
    carried the chunk before, and neither stage is busy with it. `holds_s[v][s]`: the part of stage s's time a
    hand-off into it that does not trail spends in the sender's SENDs (codegen.phase.timeline's send piece):
    they hold stage s - 1 once it has finished the chunk, so it starts its next chunk after them, and stage s
    starts when they end (the data has landed) or when it is free, whichever is later. `early_s[v]`: the last
    stage's lookup of a chunk of variant v (the embedding on the head's chips, codegen.phase.timeline's early
    pieces), run for every chunk in turn before its first; the first stage's hand-off in comes from it, its SENDs
    (holds_s[v][0]) holding the last stage, and the first stage starts a chunk as they end."""
    done = [0.0] * (len(stage_s[0]) if stage_s else 0)
    wires = [0.0] * len(done)
    landed, lead = [], 0.0
    for v in per_chunk:
        if early_s and any(early_s):
            lead += early_s[v] + (holds_s[v][0] if holds_s else 0.0)
        landed.append(lead)
    if done and lead:
        done[-1] = lead
    for c, v in enumerate(per_chunk):
        ready = landed[c] - (holds_s[v][0] if holds_s and lead else 0.0)  # the hold is in the lead
        for s, t in enumerate(stage_s[v]):
            w = trailing_s[v][s] if trailing_s else 0.0
            if w:
                ready = wires[s] = max(ready, wires[s]) + w
            h = holds_s[v][s] if holds_s else 0.0
            ready += h  # the data lands as the sender's SENDs end; the stage starts then, or when free
            done[s] = max(done[s], ready) + t - w - h
            ready = done[s]
            if holds_s and s + 1 < len(done):
                done[s] += holds_s[v][s + 1]
    return done[-1] if done else 0.0
