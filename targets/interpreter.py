"""The cycle-accurate interpreter, timing mode: executes a Program against the target's rules.

It is the independent judge of what the compiler emits, so it reads only the Program
(ir/) and the target (targets/) and never imports compiler/. Every instruction's
end is re-derived from its operands by targets.timing.durations, not taken from the
Program, and every rule below is checked with the chip, unit, queue index and cycle
of the offending instruction:

  duration     the Program books a different number of cycles than the rule gives
  unit-busy    an instruction starts before the previous one on its unit has ended
  stream-range a stream id the chip does not have
  stream-raw   a stream is read before its producer's data is there (a WRITE of a
               compute result also waits the chip's drain; an install-bound MXM may take
               its weights' READ as it streams: targets.timing.paced_start), or before
               anything wrote it
  stream-war   a stream is overwritten while a reader of its previous value still reads
  sram-range   an SRAM range outside the chip's usable SRAM
  sram-raw     a read whose bytes were last written by a write of another value than the one it declares
               (a clobber of a live buffer, a wrong address or offset, a read before its producer landed,
               an older copy of a value rewritten since), or that no write produced when it expects one
               (targets/sram_checks.py: each byte's last writer, from the Program's own columns)
  unmatched    a SEND no RECV takes (or a RECV with no SEND left), or sizes differ: chip links are FIFO
               per (sender, receiver, tag), a wafer's colours multicast (targets/messages.py, one checker)
  recv-early   a RECV scheduled before its data can arrive: send + the latency of the fastest wired
               path (targets/topology.py's graph; on a wafer, the hops its route takes on the mesh)
  duplicate    (wafer) a second SEND of one stream and tag, or a second RECV of one (sender, tag)
  sync         a SYNC barrier broken: chips reach different barriers, or at different cycles, or
               something runs beside a SYNC or issues before a chip's first one (targets/messages.py)
  link-range   a peer that is no chip or no wire reaches; a RECV elsewhere than its route delivers, or
               on a unit other than a receiving one of its SEND's link class; (wafer) a route that
               cannot reach the stream it names, or a SEND on the wrong link unit for its route
  stream-budget  the instructions running on a chip at some cycle put more bytes a cycle on its
               streams than the stream registers carry (targets/timing.py's stream budget)
  contract     an instruction breaks the ISA contract of its dialect (ir/contract.py): an opcode the
               dialect lacks, a column its opcode does not use holding a value, or vector-function
               arguments off their schema
  roles        (wafer) the metadata's regions and role streams are not what the mesh geometry gives
  tier-range, tier-raw, tier-war  the host link's FETCH and STORE (targets/tier_checks.py)
  link-busy    (with `wires`, `sramflow run --wires`) a SEND whose message enters a wire whose links all
               carry other messages at that cycle: each SEND laid over the path the arrival rule times, each
               hop holding one link cut-through for its bytes (targets/wires.py)

A Program declares its dialect and runs only on a target whose instruction set reads it (`admit`):
"queues" on a tsp chip, "roles" on a wse wafer; a target with no instruction set runs nothing.

A roles-dialect Program (one "chip" per role stream of a region's cores) runs with the same timing
rules at a core's rates; its messages go through the same checker as a chip's, with the wafer's
arrival rule (targets/wafer_timing.py): it maps the streams onto the mesh and derives every message's
hops from that geometry, never from a figure the compiler wrote.

Cost follows blocks and instances, not rows (ir/program.py stores each distinct block once).
Every rule about one chip's rows is checked once per block, over every block at once, and what
it finds holds for each instance of the block (counted once per instance, located at the
first). Then what lies between instances: on each chip the instances run one after another (a
block's span ends before the next begins) or they overlap; a stream value an instance reads
before it writes comes from an earlier instance on its chip (its open reads are paired with the
last writers before them, its first writers with the readers still reading); where instances
overlap, the chip's rows are unrolled and checked whole, reporting only what crosses instances (a batch
of such chips at a time, as every one of these rules is one chip's own; chips alike as far as the unit and
stream rules read are checked once for those rules).
Messages pair within a universe: the instances whose tag ranges overlap (targets/universes.py);
universes alike but for a shift in time are checked once. Barriers are checked over the SYNCs and
what could run beside them.

The simulated makespan is the phase's latency; tokens/s and time-to-first-token come
from it. Chips are checked in any host order with the same result (`order`).

SRAM provenance needs no data: every SRAM read declares the value it expects and where it was
written, every write the value it writes (ir/program.py's val and prov), and the interpreter derives
each access's bytes from its own columns. Not checked here: a fault that keeps an access inside its
own value's bytes (a weight panel read one vector off, a slice of the right value at the wrong
offset), which only the functional mode's numerics see.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ir.contract import DIALECT_OF_ISA, violations
from ir.errors import ConfigError
from ir.isa import Op, UnitKind
from ir.program import Program
from targets.block_checks import alike_chips, check_blocks, check_seams, check_sync_rows, overlapping_chips
from targets.hazards import Hazard, Hazards
from targets.spec import SystemSpec
from targets.sram_checks import check_provenance
from targets.tier_checks import check_tiers
from targets.timing import Timing, durations
from targets.universes import check_messages_by_universe
from targets.views import BodyView
from targets.wires import check_link_busy


@dataclass(frozen=True, eq=False)
class Run:
    """What executing one Program gives: its timeline, its hazards, and its digest. Every row's start is
    its issue; its end is the start plus the duration the rules derive (`dur`, per block row)."""

    program: Program
    dur: np.ndarray
    hazards: list[Hazard]

    @cached_property
    def block_end(self) -> np.ndarray:
        """Per block, the last derived end of its rows relative to an instance's start."""
        return self.program.spans(self.dur)[1]

    @property
    def makespan(self) -> int:
        p = self.program
        return int((p.inst["issue"] + self.block_end[p.inst["block"]]).max()) if len(p) else 0

    @property
    def seconds(self) -> float:
        return self.makespan / self.program.clock_hz

    @cached_property
    def start(self) -> np.ndarray:
        """Every unrolled row's start, in the order of program.cols (unrolls: for small Programs and tests)."""
        return self.program.cols["issue"].astype(np.int64)

    @cached_property
    def end(self) -> np.ndarray:
        row, _ = self.program.origin
        return self.start + self.dur[row]

    def digest(self) -> str:
        """sha256 over every block row's start and derived end, every instance, and the hazards found:
        together they fix every instruction's start and end cycle."""
        p = self.program
        h = hashlib.sha256()
        for a in (p.body["issue"], self.dur, p.bounds, p.inst["block"], p.inst["chip"], p.inst["issue"]):
            h.update(np.ascontiguousarray(a, "<i8").tobytes())
        h.update("\n".join(map(str, self.hazards)).encode())
        return h.hexdigest()

    def busy(self) -> dict[str, float]:
        """Mean share of the makespan each kind of unit is busy, over the units that work."""
        chip, kind, _, cycles = self.program.lane_cycles(self.dur)
        span, out = max(1, self.makespan), {}
        for k in (UnitKind.MEM, UnitKind.MXM, UnitKind.VXM, UnitKind.C2C):
            mine = kind == k
            out[k.name.lower()] = round(float(cycles[mine].sum()) / (span * int(mine.sum())), 4) if mine.any() else 0.0
        return out

    def busy_by_chip(self) -> list[dict[str, float]]:
        """Per chip, the share of the makespan each kind of unit is busy (mean over the chip's
        units of that kind that work)."""
        chip, kind, _, cycles = self.program.lane_cycles(self.dur)
        span, chips = max(1, self.makespan), self.program.chips
        out = [{} for _ in range(chips)]
        for k in (UnitKind.MEM, UnitKind.MXM, UnitKind.VXM, UnitKind.C2C):
            mine = kind == k
            busy = np.bincount(chip[mine], cycles[mine], minlength=chips)
            units = np.bincount(chip[mine], minlength=chips)
            share = np.where(units > 0, busy / (span * np.maximum(units, 1)), 0.0)
            for i, value in enumerate(share.tolist()):
                out[i][k.name.lower()] = round(value, 4)
        return out


def execute(program: Program, system: SystemSpec, order: Sequence[int] | None = None,
            limit: int = 100, wires: bool = False) -> Run:
    """Run `program` in timing mode; `order` is the host order chips are checked in (the result does
    not depend on it). At most `limit` hazards of each kind are kept (the count of the rest is reported).
    `wires`: also the `link-busy` rule (targets/wires.py: what each wire carries at once)."""
    admit(program, system)
    timing = Timing.of(system)
    body = program.body
    dur = durations(timing, body)
    found = Hazards(program, limit)
    per_block = found.per_block()
    for row, why in violations(BodyView(program)):
        per_block.add(max(row, 0), "contract", why)
    per_block.where(dur != body["cycles"], "duration",
                    lambda i: f"{Op(body['op'][i]).name.lower()} books {body['cycles'][i]} cycles, the rule gives "
                              f"{dur[i]}")
    boundary = check_blocks(program, dur, timing, system, per_block)
    check_seams(program, dur, timing, boundary, found)
    check_provenance(program, dur, per_block, found, overlapping_chips(program, dur),
                     lambda fields, chosen: alike_chips(program, dur, chosen, fields))
    check_sync_rows(program, dur, found, first_is_sync=program.dialect != "roles")
    check_messages_by_universe(program, system, dur, found)
    check_tiers(program, system, dur, found)
    if wires:
        check_link_busy(program, system, found)
    return Run(program, dur, found.sorted())


def admit(program: Program, system: SystemSpec) -> None:
    """A Program runs only on a target whose instruction set reads its dialect: one line otherwise."""
    isa = system.chip.isa
    if isa not in DIALECT_OF_ISA:
        raise ConfigError(f"{system.name} has no instruction set (isa = {isa!r}): plan and compare it, nothing "
                          "runs on it")
    if program.dialect != DIALECT_OF_ISA[isa]:
        raise ConfigError(f"a {program.dialect}-dialect {program.phase} Program cannot run on {system.name}, whose "
                          f"{isa} instruction set reads the {DIALECT_OF_ISA[isa]} dialect")
