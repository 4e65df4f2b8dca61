"""The list scheduler on templates small enough to schedule by hand."""

from compiler.codegen.schedule import schedule
from compiler.codegen.template import Instr, Template
from ir.isa import Fmt, Fn, Op
from targets import load_target
from targets.timing import Timing

TIMING = Timing.of(load_target("lpu"))


def test_timing_rules_from_the_target():
    # 55 TiB/s at 900 MHz = 67,192.4 bytes per cycle; 750 TOPS int8 = 416,667 MACs per cycle.
    assert round(TIMING.sram_bytes_per_cycle) == 67192
    assert TIMING.mem(67192) == 1 and TIMING.mem(67193) == 2
    assert TIMING.mxm(1, 1280, 1280, Fmt.I8) == 25  # install: 1,638,400 B / 67,192.4 = 24.4
    assert TIMING.mxm(512, 1280, 1280, Fmt.I8) == 2014  # passes: 838,860,800 MACs / 416,667
    assert TIMING.link_latency_cycles == 216  # 240 ns at 900 MHz


def test_streamed_panels_overlap_reads_with_the_mxm():
    """Two weight panels: READ r0 [0,25) r1 [25,50); MXM m0 [25,50) m1 [50,75) (after its read
    and the previous accumulate); WRITE after m1 plus the 93-cycle drain: [168,169)."""
    t = Template("hand", TIMING)
    r0 = t.add(Instr(Op.READ, 25))
    m0 = t.add(Instr(Op.MXM, 25, deps=((r0, 0),)))
    r1 = t.add(Instr(Op.READ, 25, deps=((m0, -25),)))  # one panel ahead of the MXM
    m1 = t.add(Instr(Op.MXM, 25, deps=((r1, 0), (m0, 0))))
    w = t.add(Instr(Op.WRITE, 1, deps=((m1, TIMING.drain_cycles),)))
    schedule(t)
    assert [t.instrs[i].issue for i in (r0, m0, r1, m1, w)] == [0, 25, 25, 50, 168]
    assert t.makespan == 169


def test_units_issue_in_order_and_ties_break_by_index():
    t = Template("queue", TIMING)
    a = t.add(Instr(Op.READ, 10))
    b = t.add(Instr(Op.READ, 5))
    c = t.add(Instr(Op.VOP, 3, deps=((b, 0),)))
    schedule(t)
    assert (t.instrs[a].issue, t.instrs[b].issue, t.instrs[c].issue) == (0, 10, 15)


def test_a_recv_waits_for_the_wire():
    t = Template("wire", TIMING)
    s = t.add(Instr(Op.SEND, 132, unit=0))
    r = t.add(Instr(Op.RECV, 132, unit=1, deps=((s, 3 * TIMING.link_latency_cycles - 132),)))
    schedule(t)
    assert t.instrs[r].issue == 3 * 216 and t.makespan == 3 * 216 + 132


def test_a_tiny_model_whose_schedule_length_is_computed_by_hand():
    """y = silu((x @ W) * scale) with x f16[1,1280], W int8[1280,2560]: two 1280x1280 weight panels.

    Critical path, in cycles, from the lpu's numbers (67,192.4 SRAM bytes/cycle, 93-cycle drain,
    216-cycle start sync):
      216 sync | 1 read x | 25 read panel 0 (1,638,400 B) | 1 read scale 0 | 25 read panel 1 |
      25 MXM panel 1 (its install, 25, outweighs 4 cycles of passes) | 1 scale | 93 drain |
      1 write y | 1 read y | 2 silu (2,560 elements) | 93 drain | 1 write  = 485.
    MXM panel 0 [242, 267) hides under the read of panel 1 [243, 268)."""
    from compiler.codegen.phase import lower_phase
    from compiler.plan import Memory, Stage
    from ir.asm import print_asm
    from ir.graph import Builder
    from ir.ops import Opcode
    from ir.types import DType, TensorType

    b = Builder("hand", scope="mlp")
    x = b.input("x", TensorType(DType.F16, (1, 1280)))
    w, s = b.param("w", DType.I8, 1280, 2560), b.param("w.scale", DType.F16, 2560)
    graph = b.finish(b.op(Opcode.SILU, b.op(Opcode.MATMUL, x, w, s)))
    stage = Stage(0, "mlp", "mlp", None, 1, 0, Memory(0, 0, 0, 0, 0), 0.0, 0.0, 0.0, 0, "")
    program, _ = lower_phase("decode", graph, [stage], load_target("lpu"), 1, "lpu")
    assert program.makespan == 216 + 1 + 25 + 1 + 25 + 25 + 1 + 93 + 1 + 1 + 2 + 93 + 1 == 485
    mxm = program.cols["issue"][program.cols["op"] == Op.MXM].tolist()
    assert mxm == [242, 268], print_asm(program)
    assert TIMING.vop(Fn.SILU, 2560, 5120) == 2 and TIMING.drain_cycles == 93 and TIMING.sync_cycles == 216
