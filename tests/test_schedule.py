"""The list scheduler on templates small enough to schedule by hand."""

from compiler.codegen.schedule import schedule
from compiler.codegen.template import Instr, Ref, Space, Template
from ir.isa import Fmt, Fn, Op
from targets import load_target
from targets.timing import Timing

TIMING = Timing.of(load_target("lpu"))


def test_timing_rules_from_the_target():
    # One MEM instruction moves min(56,320 SRAM, 10,240 stream-port) bytes a cycle; weights install
    # at 10,240 B/cycle in whole 320 x 320 tiles; 750 TOPS int8 = 416,667 MACs per cycle.
    assert TIMING.sram_bytes_per_cycle == 56_320 and TIMING.mem_bytes_per_cycle == 10_240
    assert TIMING.mem(10_240) == 1 and TIMING.mem(10_241) == 2
    assert TIMING.mxm(1, 1280, 1280, Fmt.I8) == 160  # install: 16 tiles x 102,400 B / 10,240
    assert TIMING.mxm(1, 1280, 1280, Fmt.F16) == 320  # fp16: a pair of planes, 2 bytes a weight
    assert TIMING.mxm(1, 1000, 1000, Fmt.I8) == 160  # 1000 needs 4 tiles a side, like 1280
    assert TIMING.mxm(512, 1280, 1280, Fmt.I8) == 2014  # passes: 512 x 16 tiles x 102,400 MACs / 416,667
    assert TIMING.link_latency_cycles == 216  # 240 ns at 900 MHz


def test_streamed_panels_overlap_reads_with_the_mxm():
    """Two weight panels: READ r0 [0,160) r1 [160,320); MXM m0 [160,320) m1 [320,480) (after its read
    and the previous accumulate); WRITE after m1 plus the 93-cycle drain: [573,574)."""
    t = Template("hand", TIMING)
    r0 = t.add(Instr(Op.READ, 160))
    m0 = t.add(Instr(Op.MXM, 160, deps=((r0, 0),)))
    r1 = t.add(Instr(Op.READ, 160, deps=((m0, -160),)))  # one panel ahead of the MXM
    m1 = t.add(Instr(Op.MXM, 160, deps=((r1, 0), (m0, 0))))
    w = t.add(Instr(Op.WRITE, 1, deps=((m1, TIMING.drain_cycles),)))
    schedule(t)
    assert [t.instrs[i].issue for i in (r0, m0, r1, m1, w)] == [0, 160, 160, 320, 573]
    assert t.makespan == 574


def test_the_scheduler_keeps_stream_output_within_the_stream_registers():
    """Two READs of 10,240 B/cycle each fill the 20,480 B/cycle of stream registers: a VOP whose
    results need 2,560 B/cycle more waits until one of them ends, though its unit is free."""
    t = Template("streams", TIMING)
    a = t.add(Instr(Op.READ, 10, src_bytes=102_400))
    b = t.add(Instr(Op.RECV, 20, unit=1, dst_bytes=20 * 10_240))  # a second producer at 10,240 B/cycle
    v = t.add(Instr(Op.VOP, 4, fn=Fn.COPY, m=1, n=5_120, src_bytes=10_240))
    schedule(t)
    assert (t.instrs[a].issue, t.instrs[b].issue, t.instrs[v].issue) == (0, 0, 10)


def test_a_unit_takes_the_instruction_on_the_longer_path_first():
    """Both reads are ready at 0 on the one MEM queue: b leads to c, so b first ends at 5 + 10 = 15
    (a first: 10 + 5 + 3 = 18)."""
    t = Template("queue", TIMING)
    a = t.add(Instr(Op.READ, 10))
    b = t.add(Instr(Op.READ, 5))
    c = t.add(Instr(Op.VOP, 3, deps=((b, 0),)))
    schedule(t)
    assert (t.instrs[a].issue, t.instrs[b].issue, t.instrs[c].issue) == (5, 0, 5)


def test_ties_on_a_unit_break_by_index():
    t = Template("ties", TIMING)
    a = t.add(Instr(Op.READ, 10))
    b = t.add(Instr(Op.READ, 10))
    schedule(t)
    assert (t.instrs[a].issue, t.instrs[b].issue) == (0, 10)


def test_a_prefetch_with_slack_leaves_the_mem_queue_to_the_critical_write():
    """The prefetch p (10 cycles, one MXM cycle after it) is ready at 0; the write w on the long path
    (write, read, a 20-cycle VOP) is ready at 5. Taking the queue at 0, p would hold w to 10 and the
    template to 32; so w goes at 5, r at 6, v ends at 27 and p follows r."""
    t = Template("prefetch", TIMING)
    x = t.add(Instr(Op.VOP, 5))
    p = t.add(Instr(Op.READ, 10))
    t.add(Instr(Op.MXM, 1, deps=((p, 0),)))
    w = t.add(Instr(Op.WRITE, 1, deps=((x, 0),)))
    r = t.add(Instr(Op.READ, 1, deps=((w, 0),)))
    t.add(Instr(Op.VOP, 20, deps=((r, 0),)))
    schedule(t)
    assert (t.instrs[w].issue, t.instrs[r].issue, t.instrs[p].issue, t.makespan) == (5, 6, 7, 27)


def test_accesses_to_the_same_sram_bytes_keep_their_order():
    """A read of a whole slot names only the write of its second half; it still follows the earlier write
    of the first half (ready later, at 50). A read of the second half alone does not wait for it."""
    t = Template("sram", TIMING)
    slot = t.local(1024)
    late = t.add(Instr(Op.VOP, 50))
    first = t.add(Instr(Op.WRITE, 1, dst=slot, dst_bytes=512, deps=((late, 0),)))
    second = t.add(Instr(Op.WRITE, 1, dst=Ref(Space.LOCAL, slot.slot, 512), dst_bytes=512))
    whole = t.add(Instr(Op.READ, 1, src=slot, src_bytes=1024, deps=((second, 0),)))
    half = t.add(Instr(Op.READ, 1, src=t.instrs[second].dst, src_bytes=512, deps=((second, 0),)))
    schedule(t)
    assert t.instrs[whole].issue >= t.instrs[first].end == 51
    assert t.instrs[half].issue < t.instrs[first].issue


def test_a_recv_waits_for_the_wire():
    t = Template("wire", TIMING)
    s = t.add(Instr(Op.SEND, 132, unit=0))
    r = t.add(Instr(Op.RECV, 132, unit=1, deps=((s, 3 * TIMING.link_latency_cycles - 132),)))
    schedule(t)
    assert t.instrs[r].issue == 3 * 216 and t.makespan == 3 * 216 + 132


def test_a_tiny_model_whose_schedule_length_is_computed_by_hand():
    """y = silu((x @ W) * scale) with x f16[1,1280], W int8[1280,2560]: two 1280x1280 weight panels.

    Critical path, in cycles, from the lpu's numbers (MEM moves 10,240 B/cycle, one stream port;
    weights install at 10,240 B/cycle in 320 x 320 tiles; 93-cycle drain; 216-cycle start sync):
      216 sync | 1 read x | 1 (MXM 0 starts a cycle after its panel's READ [217, 377): its install
      takes the panel off the stream as MEM puts it out, targets.timing.paced_start) | 160 MXM panel 0
      (its install, 16 tiles x 10 cycles, outweighs 4 cycles of passes) | 160 MXM panel 1 (its READ
      [377, 537) waits for MXM 0 to start and for MEM; it ends under MXM 1) | 1 read of panel 1's scales
      (after that READ on MEM) | 1 scale | 93 drain | 1 write y | 1 read y | 2 silu (2,560 elements x
      4 ops / 5,120 ALUs) | 93 drain | 1 write  = 731.
    Before the paced rule each MXM waited for its whole panel's READ: 889."""
    from compiler.codegen.phase import lower_phase
    from compiler.plan import ChipRange, Memory, Stage
    from ir.asm import print_asm
    from ir.graph import Builder
    from ir.ops import Opcode
    from ir.types import DType, TensorType

    b = Builder("hand", scope="mlp")
    x = b.input("x", TensorType(DType.F16, (1, 1280)))
    w, s = b.param("w", DType.I8, 1280, 2560), b.param("w.scale", DType.F16, 2560)
    graph = b.finish(b.op(Opcode.SILU, b.op(Opcode.MATMUL, x, w, s)))
    stage = Stage(0, "mlp", "mlp", None, ChipRange(0, 1), Memory(0, 0, 0, 0, 0), 0.0, 0.0, 0.0, 0, "")
    program, _ = lower_phase("decode", [graph], [1], [stage], load_target("lpu"), "lpu")
    assert program.makespan == 216 + 1 + 1 + 160 + 160 + 1 + 1 + 93 + 1 + 1 + 2 + 93 + 1 == 731
    mxm = program.cols["issue"][program.cols["op"] == Op.MXM].tolist()
    assert mxm == [218, 378], print_asm(program)
    assert TIMING.vop(Fn.SILU, 2560, 5120) == 2 and TIMING.drain_cycles == 93 and TIMING.sync_cycles == 216
