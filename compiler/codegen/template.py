"""Templates: the instructions of one unit (a layer, the embedding, the head), scheduled once.

A template is instantiated for every identical layer and every chip of a tensor-parallel group:
addresses are symbolic (space, slot, offset) and resolved per instance, peers are offsets within
the group resolved per rank. A chip template is rank-generic: every rank runs all of it. A wafer
region's template holds several streams (`Instr.stream`: one per role class of the region's cores,
each run by that many replicas), and each instance places every stream on its own "chip".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ir.isa import UNIT_OF, Fmt, Fn, Op, UnitKind
from targets.timing import Timing

# Message tags one piece instance may use: a template's tags lie in [0, TAG_SPACE), and each instance
# of a piece gets its own base (a multiple of it), so instances' messages never meet by accident.
TAG_SPACE = 4096


class Space(enum.IntEnum):
    """Where a symbolic address lives; `slot` indexes the space's list for the unit."""

    PARAM = 0  # the unit's params and caches, in first-use order
    INPUT = 1  # graph inputs (token ids, positions) the host writes before the step
    LOCAL = 2  # activations that live and die inside the unit (the template's arena)
    PORT_IN = 3  # activations from an earlier unit or stage
    PORT_OUT = 4  # activations a later unit or stage reads


@dataclass(frozen=True, slots=True)
class Peer:
    """The other chip of a SEND or RECV, relative to this chip's rank r in its stage.

    level "group": the chips r's rank splits into blocks of `group * stride`; inside its
    block, r is member (r mod block) // stride, and the peer is member (that + delta) mod
    group at the same r mod stride (stride 1: a node's chips; stride = chips per node: the
    chips with the same local rank in the other nodes).
    level "next": chip (r mod group) * stride + delta of the following stage (a hand-off's lane r sends
    its pieces `stride` apart); "prev": chip (r mod group) // stride of the preceding stage, the tag
    shifted by (r // group) * stride + r mod stride (codegen.stage's hand-off).
    level "stream": stream `delta` counted from the instance's first (a role stream of a wafer region,
    or of its neighbour's); level "host": the host (ir.program.HOST).
    `hops` is the worst case over the stage's chips, which the schedule allows for.
    `turns` (a "group" peer): the delta by the rank's index inside its stride (a node's chips, at the nodes'
    level), negated when `back`; a rank whose entry is 0 does not run the instruction. So the chips of a node
    reach other nodes each at its own moment of one template (codegen.collectives' turned levels)."""

    level: str
    delta: int
    group: int
    stride: int
    hops: int
    turns: tuple[int, ...] = ()
    back: bool = False


@dataclass(frozen=True, slots=True)
class Ref:
    """A symbolic SRAM address. Each of `parts` (peer, bytes) adds bytes times the group index
    of the chip the peer names: where a rank's (or its peer's) slice of a collective sits."""

    space: Space
    slot: int
    offset: int = 0
    parts: tuple[tuple[Peer, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Rel:
    """A rank-dependent integer: `base`, plus bytes times the group index of the chip each of
    `parts` names (as Ref), plus `per_rank` times the chip's rank in its stage divided by `div`."""

    base: int = 0
    parts: tuple[tuple[Peer, int], ...] = ()
    per_rank: int = 0
    div: int = 1


@dataclass(slots=True)
class Instr:
    op: Op
    cycles: int
    unit: int = 0  # MXM plane; C2C links are chosen per instance
    fn: Fn = Fn.NONE
    fmt: Fmt = Fmt.F16
    m: int = 0
    k: int = 0
    n: int = 0
    flags: int = 0
    src: Ref | None = None
    src_bytes: int = 0
    dst: Ref | None = None
    dst_bytes: int = 0
    s_a: int = -1
    s_b: int = -1
    s_c: int = -1
    s_d: int = -1  # a block-scaled MXM tile's scales
    s_e: int = -1  # a grouped MXM's routing table
    s_out: int = -1
    peer: Peer | None = None
    tag: int = -1
    offset: int | Rel = 0  # where the input starts in its stream (ir.program)
    stride: int = 0
    imm: int | Rel = -1  # -1: none
    base: int | Rel = 0
    args: tuple | None = None  # a VOP's or attention MXM's arguments (meta["fn_args"] entry), sorted items
    deps: tuple[tuple[int, int], ...] = ()  # (instruction, extra cycles after its end)
    overhang: bool = False  # a READ that may run past its value's end (ir.contract.Prov.TAIL)
    issue: int = -1
    stream: int = 0  # which of the template's streams runs it (a chip template has one)
    route: int = 0  # how a roles-dialect SEND crosses the wafer (ir.contract.Route)

    @property
    def kind(self) -> UnitKind:
        return UNIT_OF[self.op]

    @property
    def end(self) -> int:
        return self.issue + self.cycles


@dataclass
class Template:
    """Instructions in emission order (a valid topological order of `deps`)."""

    name: str
    timing: Timing
    instrs: list[Instr] = field(default_factory=list)
    local_bytes: list[int] = field(default_factory=list)  # size of each LOCAL slot
    _streams: int = 0
    # Stream ids and C2C units as emitted are physical (a wafer core's streams and its links), not
    # coloured after scheduling and picked per chip; its emitter sets every issue cycle itself.
    physical: bool = False
    pair: tuple[int, int] = (-1, -1)  # a physical template's two result streams, which an instance may trade
    # Its streams take the chip's highest ids, the other templates' the lowest: a hand-off's SENDs may trail
    # beside the stage's next pieces (codegen.phase.timeline) on streams those leave free.
    top: bool = False
    frozen: object = field(default=None, repr=False, compare=False)  # its arrays, once scheduled (instantiate.freeze)

    def add(self, instr: Instr) -> int:
        self.instrs.append(instr)
        return len(self.instrs) - 1

    def stream(self) -> int:
        """A fresh template stream id (physical ids are assigned after scheduling)."""
        self._streams += 1
        return self._streams - 1

    def local(self, nbytes: int) -> Ref:
        self.local_bytes.append(nbytes)
        return Ref(Space.LOCAL, len(self.local_bytes) - 1)

    @property
    def makespan(self) -> int:
        return max((i.end for i in self.instrs), default=0)
