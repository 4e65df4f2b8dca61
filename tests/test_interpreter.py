"""The interpreter's timing mode: it agrees with the schedule on clean programs, and it flags
every mutation that breaks a dependency (and never the unmutated program)."""

import json

import numpy as np
import pytest

from compiler.cli import main
from ir.contract import Prov
from ir.isa import Op, UnitKind
from ir.program import Program
from ir.program_io import load_program
from targets import load_target
from targets.interpreter import execute
from tests.test_compile import TINY_ARGS, TINY_TARGET


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("interp")
    target = root / "lpu-64k.toml"
    target.write_text(TINY_TARGET)
    out = root / "tiny"
    assert main(["compile", *TINY_ARGS, "--target", str(target), "-o", str(out)]) == 0
    return out, load_target(str(target))


def mutated(program: Program, change) -> Program:
    cols = {n: a.copy() for n, a in program.cols.items()}
    change(cols)
    return program.with_columns(cols)


def kinds(run) -> set[str]:
    return {h.kind for h in run.hazards}


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_clean_programs_run_hazard_free_and_match_the_schedule(build, phase):
    out, system = build
    program = load_program(out / f"{phase}.prog")
    run = execute(program, system)
    assert run.hazards == []
    assert run.makespan == program.makespan


def test_run_json_reports_the_documented_keys(build, capsys):
    out, _ = build
    assert main(["run", str(out), "--json", "--tokens", "4", "--check-determinism"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["hazards"] == []
    decode = load_program(out / "decode.prog")
    assert f["decode"]["latency_cycles"] == decode.makespan
    assert f["decode"]["latency_us"] == pytest.approx(decode.makespan / decode.clock_hz * 1e6, abs=1e-3)
    assert f["decode"]["tokens_per_s"] == pytest.approx(1e6 / f["decode"]["latency_us"], rel=1e-3)
    assert f["prefill"]["ttft_ms"] > 0 and f["wall_s"] >= 0
    # each phase once, and again in the determinism check's shuffled chip order: what the interpreter ran
    assert f["instructions_executed"] == 2 * (len(decode) + len(load_program(out / "prefill.prog")))
    assert f["determinism"]["passed"] and len(f["determinism"]["digest"]) == 64


def test_the_same_run_twice_gives_the_same_digest(build):
    out, system = build
    program = load_program(out / "decode.prog")
    order = list(range(program.chips))[::-1]
    assert execute(program, system).digest() == execute(program, system, order=order).digest()


# ---------------------------------------------------------------- mutations


def _tight_consumers(program: Program, system) -> list[int]:
    """Rows that read a stream exactly when its data is ready: one cycle earlier breaks them."""
    run = execute(program, system)
    c = program.cols
    out = []
    for chip in range(program.chips):
        rows = range(*program.chip_slice(chip).indices(len(program)))
        ends = {}
        for i in sorted(rows, key=lambda i: (c["issue"][i], i)):
            for s in (c["s_a"][i], c["s_b"][i]):
                if s >= 0 and ends.get(s) == c["issue"][i] and c["op"][i] != Op.WRITE:
                    out.append(i)
            if c["s_out"][i] >= 0:
                ends[int(c["s_out"][i])] = int(run.end[i])
    return out


def test_moving_a_reader_a_cycle_earlier_is_flagged(build):
    out, system = build
    program = load_program(out / "decode.prog")
    tight = _tight_consumers(program, system)
    assert len(tight) > 20
    for i in tight[:: max(1, len(tight) // 25)]:
        def earlier(cols, i=i):
            cols["issue"][i] -= 1
        assert kinds(execute(mutated(program, earlier), system)) & {"stream-raw", "unit-busy"}, program.row(i)


def test_dropping_a_send_is_flagged(build):
    out, system = build
    program = load_program(out / "decode.prog")
    sends = np.flatnonzero(program.cols["op"] == Op.SEND)
    for i in sends[:: max(1, len(sends) // 10)].tolist():
        keep = np.ones(len(program), dtype=bool)
        keep[i] = False
        assert "unmatched" in kinds(execute(program.select(keep), system))


def test_a_receive_before_the_wire_delivers_is_flagged(build):
    out, system = build
    program = load_program(out / "decode.prog")
    recvs = np.flatnonzero(program.cols["op"] == Op.RECV)
    i = int(recvs[len(recvs) // 2])

    def early(cols):
        cols["issue"][i] -= 250  # more than one hop's 216 cycles of latency
    assert "recv-early" in kinds(execute(mutated(program, early), system))


def test_swapping_two_queue_entries_is_flagged(build):
    out, system = build
    program = load_program(out / "decode.prog")
    c = program.cols
    flagged = 0
    for _, kind, _, rows in program.queues():
        if kind not in (UnitKind.MEM, UnitKind.VXM):
            continue
        for a in range(rows.start, rows.stop - 1):
            b = a + 1

            def swap(cols, a=a, b=b):
                for n in cols:
                    if n != "issue":
                        cols[n][[a, b]] = cols[n][[b, a]]
            if c["s_out"][a] >= 0 and c["s_out"][a] in (c["s_a"][b], c["s_b"][b]) \
                    and not _written_before(program, a):
                assert kinds(execute(mutated(program, swap), system)), (a, b)
                flagged += 1
    assert flagged > 5


def _written_before(program: Program, row: int) -> bool:
    """Whether an older value of `row`'s output stream exists on its chip. The timing mode
    pairs a read with the latest write at or before it, so a swapped reader that finds a
    stale value is not seen here; the functional mode's numerics catch it (issue 4)."""
    c = program.cols
    rows = program.chip_slice(int(c["chip"][row]))
    same = (c["s_out"][rows] == c["s_out"][row]) & (c["issue"][rows] < c["issue"][row])
    return bool(same.any())


def test_booking_too_few_cycles_or_leaving_sram_is_flagged(build):
    out, system = build
    program = load_program(out / "decode.prog")
    mxm = int(np.flatnonzero(program.cols["op"] == Op.MXM)[0])
    read = int(np.flatnonzero(program.cols["op"] == Op.READ)[0])

    def short(cols):
        cols["cycles"][mxm] -= 1

    def outside(cols):
        cols["src"][read] = system.chip.usable_sram_bytes - 1

    def no_stream(cols):
        cols["s_out"][read] = 4000
    assert "duration" in kinds(execute(mutated(program, short), system))
    assert "sram-range" in kinds(execute(mutated(program, outside), system))
    assert "stream-range" in kinds(execute(mutated(program, no_stream), system))


def test_run_exits_non_zero_on_hazards(build, tmp_path, capsys):
    import shutil

    from ir.build_io import write_manifest
    from ir.program_io import save_program

    out, _ = build
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    program = load_program(broken / "decode.prog")
    save_program(program.select(program.cols["op"] != Op.SEND), broken / "decode.prog")
    assert main(["run", str(broken)]) == 1
    assert "damaged or edited build: decode.prog (sha256 differs" in capsys.readouterr().err
    write_manifest(broken, program.target)  # the edit made on purpose: now the interpreter must catch it
    assert main(["run", str(broken)]) == 2
    assert "unmatched" in capsys.readouterr().out
    assert main(["run", str(tmp_path)]) == 1
    assert "not a build directory" in capsys.readouterr().err


def test_unit_busy_is_reported_per_chip(build, capsys):
    out, _ = build
    assert main(["run", str(out), "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    per_chip = f["decode"]["busy_by_chip"]
    assert len(per_chip) == f["chips"]
    for kind in ("mem", "mxm", "vxm", "c2c"):
        assert all(0 <= chip[kind] <= 1 for chip in per_chip)
    assert max(chip["mem"] for chip in per_chip) > 0


# ---------------------------------------------------------------- the weight path and the stream budget


def _kernel(tmp_path, text: str):
    source = tmp_path / "k.ir"
    source.write_text(text)
    assert main(["compile", str(source), "--target", "lpu", "--chips", "1", "-o", str(tmp_path / "k")]) == 0
    return load_program(tmp_path / "k" / "decode.prog"), load_target("lpu")


def test_an_mxm_booked_faster_than_the_install_rate_is_flagged(tmp_path):
    from benchmarks.kernels import chain_ir as matvec_chain

    program, lpu = _kernel(tmp_path, matvec_chain(1, [1000, 1000], "i8"))
    assert execute(program, lpu).hazards == []
    mxm = np.flatnonzero(program.cols["op"] == Op.MXM)[0]
    assert program.cols["cycles"][mxm] == 160  # 16 tiles x 102,400 B / 10,240 B/cycle
    # booked at the SRAM's 56,320 B/cycle instead (18 cycles), and the rest of the program pulled in
    fast = mutated(program, lambda c: c["cycles"].__setitem__(mxm, 18))
    found = [h for h in execute(fast, lpu).hazards if h.kind == "duration"]
    assert found and "mxm books 18 cycles, the rule gives 160" in found[0].detail and found[0].unit == "mxm.0"


def test_stream_traffic_over_the_stream_registers_is_flagged():
    """Three 102,400-byte READs, each putting 10,240 B/cycle on streams: one after another they are
    clean; at once, on three MEM queues, 30,720 B/cycle exceed the 20,480 the stream registers carry.
    The chip starts with its SYNC, as every chip of a Program does."""
    from ir.program import empty_columns

    lpu = load_target("lpu")
    cols = empty_columns(4)
    cols["kind"][3], cols["op"][3], cols["cycles"][3] = UnitKind.SYNC, Op.SYNC, lpu.sync_cycles
    t0 = lpu.sync_cycles
    for i in range(3):
        cols["chip"][i], cols["kind"][i], cols["op"][i] = 0, UnitKind.MEM, Op.READ
        cols["issue"][i], cols["cycles"][i] = t0 + 10 * i, 10
        cols["src"][i], cols["src_bytes"][i], cols["s_out"][i] = 0, 102_400, i
        cols["val"][i], cols["prov"][i] = 0, Prov.RESIDENT  # a weight: present before the phase
    clean = Program.build("decode", "lpu", 1, lpu.chip.clock_hz, cols)
    assert execute(clean, lpu).hazards == []
    crowded = mutated(clean, lambda c: (c["unit"].__setitem__(slice(1, 3), [1, 2]),
                                        c["issue"].__setitem__(slice(1, 3), [t0, t0 + 5])))
    found = [h for h in execute(crowded, lpu).hazards if h.kind == "stream-budget"]
    assert len(found) == 1 and found[0].chip == 0 and found[0].cycle == t0 + 5 and found[0].unit == "mem.2"
    assert "mem.0, mem.1, mem.2 put 30,720 B/cycle" in found[0].detail and "20,480" in found[0].detail


def _weight_read(program: Program, mxm: int) -> int:
    """The READ whose stream an MXM takes its weights (s_a) from."""
    c = program.cols
    reads = np.flatnonzero((c["op"] == Op.READ) & (c["s_out"] == c["s_a"][mxm]) & (c["issue"] <= c["issue"][mxm]))
    return int(reads[np.argmax(c["issue"][reads])])


@pytest.mark.parametrize(("rows", "paced"), [(1, True), (256, False)])
def test_an_install_bound_mxm_takes_its_weights_as_mem_streams_them(tmp_path, rows, paced):
    """One row: the MXM's 160 cycles are its install, so it starts a cycle after its weights' READ starts
    and ends after it (targets.timing.paced_start); one cycle earlier is flagged. 256 rows through 320 x 320
    int8: 63 cycles of passes outweigh 10 of install, so the MXM waits for the whole READ."""
    from benchmarks.kernels import chain_ir as matvec_chain

    dim = 1000 if paced else 320
    program, lpu = _kernel(tmp_path, matvec_chain(rows, [dim, dim], "i8"))
    assert execute(program, lpu).hazards == []
    c = program.cols
    mxm = int(np.flatnonzero(c["op"] == Op.MXM)[0])
    read = _weight_read(program, mxm)
    read_end = int(c["issue"][read] + c["cycles"][read])
    assert c["issue"][mxm] == (c["issue"][read] + 1 if paced else read_end), program.row(mxm)
    assert c["issue"][mxm] + c["cycles"][mxm] >= read_end
    early = mutated(program, lambda cols: cols["issue"].__setitem__(mxm, cols["issue"][mxm] - 1))
    assert "stream-raw" in kinds(execute(early, lpu))
