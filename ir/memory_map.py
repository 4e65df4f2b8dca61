"""memory.json: what a build keeps where, typed. The compiler writes it; `run` and `inspect` read it.

A chip build lists, per stage (every chip of a stage has one layout), its SRAM blocks: weights and
caches ("phase": "both") and each phase's own inputs, ports and activation arena; where each phase's
outputs end up; and the shape of what it runs (vocabulary, cache context, batch, whether a recurrent
state runs through every row). A wafer build lists each stage's region, role streams and per-core
bytes. `MemoryMap.loads` checks every field and names the first that is wrong, so a runner never
meets a half-written map.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ir.errors import ParseError

PHASES = ("decode", "prefill", "verify")  # verify: a speculative build's
BLOCK_PHASES = ("both", *PHASES)


@dataclass(frozen=True, slots=True)
class Block:
    """One SRAM range of every chip of a stage."""

    kind: str  # "param", "state" (a cache or recurrent state), "input", "port", "arena", ...
    name: str
    addr: int
    bytes: int
    phase: str  # BLOCK_PHASES: "both" for weights and caches, else the phase that lays it out
    ranks: tuple[int, int] | None = None  # held only by the stage's ranks [lo, hi) (a subset stage's), else all

    def on(self, rank: int) -> bool:
        """Whether the stage's chip of rank `rank` holds it."""
        return self.ranks is None or self.ranks[0] <= rank < self.ranks[1]


@dataclass(frozen=True, slots=True)
class StageMemory:
    """A chip stage's layout (chips first_chip .. first_chip + tp - 1), or a wafer stage's region."""

    index: int
    first_chip: int = 0
    tp: int = 0
    regions: tuple[Block, ...] = ()
    region: dict | None = None  # a wafer stage: its rectangle of cores
    first_stream: int = 0
    streams: int = 0
    resident_bytes_per_core: int = 0
    prefill_resident_bytes_per_core: int = 0

    def blocks(self, phase: str, kinds: tuple[str, ...] | None = None, rank: int | None = None) -> list[Block]:
        """The blocks `phase` sees (its own and both phases'), of `kinds` if given, on the chip of `rank` if given."""
        return [b for b in self.regions if b.phase in (phase, "both") and (kinds is None or b.kind in kinds)
                and (rank is None or b.on(rank))]

    def rank_classes(self) -> list[int]:
        """A rank of each class of the stage's chips that hold the same blocks (one class unless some blocks are
        a block of ranks' own)."""
        return sorted({0, *(r for b in self.regions if b.ranks for r in b.ranks if r < self.tp)})


@dataclass(frozen=True, slots=True)
class Output:
    """Where a phase's output ends up: a value of stage `stage`, split in `shards` vocabulary shards,
    of `rows` rows; `row`: the row of each sequence's chunk it was taken from (prefill's logits: where
    the compiled prompt ends in its last chunk), None when it has every row; `cols`: a row's elements of
    the whole value (the shards side by side may hold more: padding past the vocabulary), None: all."""

    stage: int
    value: str
    shards: int
    rows: int
    row: int | None = None
    cols: int | None = None


@dataclass(frozen=True)
class MemoryMap:
    """A build's memory.json (see the module docstring)."""

    stages: tuple[StageMemory, ...]
    context: int  # cache positions a sequence holds
    batch: int
    recurrent: bool = False  # a Mamba state runs on through every row, padding included
    wafer: bool = False
    vocab_size: int | None = None
    outputs: dict[str, dict[str, Output]] = field(default_factory=dict)  # phase -> output name -> where

    def to_json(self) -> str:
        data = asdict(self) | {"stages": [_stage_dict(s) for s in self.stages]}
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def loads(cls, text: str, where: str = "memory.json") -> MemoryMap:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ParseError(f"{where}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
        return _memory(data, where)

    @classmethod
    def from_dict(cls, data: dict, where: str = "memory.json") -> MemoryMap:
        """The map from its JSON form, every field checked."""
        return _memory(data, where)


def _stage_dict(s: StageMemory) -> dict:
    if s.region is not None:
        return {"index": s.index, "region": s.region, "first_stream": s.first_stream, "streams": s.streams,
                "resident_bytes_per_core": s.resident_bytes_per_core,
                "prefill_resident_bytes_per_core": s.prefill_resident_bytes_per_core}
    return {"index": s.index, "first_chip": s.first_chip, "tp": s.tp, "regions": [_block_dict(b) for b in s.regions]}


def _block_dict(b: Block) -> dict:
    """A block's JSON: `ranks` only where a block of the stage's ranks alone holds it."""
    d = asdict(b)
    if b.ranks is None:
        del d["ranks"]
    else:
        d["ranks"] = list(b.ranks)
    return d


def _memory(data: object, where: str) -> MemoryMap:
    top = _table(data, where)
    stages = tuple(_stage(s, f"{where}: stages[{i}]") for i, s in enumerate(_list(top, "stages", where)))
    outputs = {}
    for phase, named in _table(top.get("outputs", {}), f"{where}: outputs").items():
        if phase not in PHASES:
            raise ParseError(f"{where}: outputs.{phase}: not a phase ({', '.join(PHASES)})")
        outputs[phase] = {name: _output(o, f"{where}: outputs.{phase}.{name}")
                          for name, o in _table(named, f"{where}: outputs.{phase}").items()}
    vocab = top.get("vocab_size")
    if vocab is not None:
        vocab = _int(top, "vocab_size", where, 1)
    return MemoryMap(stages, _int(top, "context", where, 1), _int(top, "batch", where, 1),
                     _bool(top, "recurrent", where), _bool(top, "wafer", where), vocab, outputs)


def _output(o: object, where: str) -> Output:
    row = None if _table(o, where).get("row") is None else _int(o, "row", where)
    cols = None if o.get("cols") is None else _int(o, "cols", where, 1)
    return Output(_int(o, "stage", where), _str(o, "value", where), _int(o, "shards", where, 1),
                  _int(o, "rows", where, 1), row, cols)


def _stage(data: object, where: str) -> StageMemory:
    s = _table(data, where)
    if "region" in s:
        return StageMemory(_int(s, "index", where), region=_table(s["region"], f"{where}.region"),
                           first_stream=_int(s, "first_stream", where), streams=_int(s, "streams", where, 1),
                           resident_bytes_per_core=_int(s, "resident_bytes_per_core", where),
                           prefill_resident_bytes_per_core=_int(s, "prefill_resident_bytes_per_core", where))
    blocks = []
    for i, b in enumerate(_list(s, "regions", where)):
        at = f"{where}.regions[{i}]"
        block = Block(_str(b, "kind", at), _str(b, "name", at), _int(b, "addr", at), _int(b, "bytes", at),
                      _str(b, "phase", at), _ranks(b, at, _int(s, "tp", where, 1)))
        if block.phase not in BLOCK_PHASES:
            raise ParseError(f"{at}.phase: {block.phase!r} is not one of {', '.join(BLOCK_PHASES)}")
        blocks.append(block)
    return StageMemory(_int(s, "index", where), _int(s, "first_chip", where), _int(s, "tp", where, 1), tuple(blocks))


def _ranks(b: dict, at: str, tp: int) -> tuple[int, int] | None:
    """A block's `ranks` [lo, hi): 0 <= lo < hi <= the stage's tp, or absent (every chip)."""
    if "ranks" not in b:
        return None
    r = b["ranks"]
    if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            and 0 <= r[0] < r[1] <= tp):
        raise ParseError(f"{at}.ranks: must be [first, end] with 0 <= first < end <= {tp}, got {r!r}")
    return r[0], r[1]


def _table(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise ParseError(f"{where}: must be a table")
    return value


def _list(table: dict, key: str, where: str) -> list:
    value = table.get(key)
    if not isinstance(value, list):
        raise ParseError(f"{where}: {key}: must be a list")
    return value


def _int(table: object, key: str, where: str, least: int = 0) -> int:
    value = _table(table, where).get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ParseError(f"{where}.{key}: must be an integer of at least {least}, got {value!r}")
    return value


def _str(table: object, key: str, where: str) -> str:
    value = _table(table, where).get(key)
    if not isinstance(value, str):
        raise ParseError(f"{where}.{key}: must be a string, got {value!r}")
    return value


def _bool(table: dict, key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ParseError(f"{where}.{key}: must be true or false, got {value!r}")
    return value
