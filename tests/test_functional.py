"""The interpreter's functional mode: every instruction of every chip executed on data.

tiny-llama is compiled with a checkpoint the tests write (random weights) onto small targets,
so it spreads over pipeline stages and tensor-parallel groups (vocabulary-sharded embedding
and head, all-reduces, hierarchical all-gathers, multi-lane hand-offs). Its greedy tokens must
equal those of the graph IR's numpy reference and of Hugging Face transformers, and its
logits the reference's within 16-bit rounding. A second target with 16x16 matrix planes cuts
every matmul into many k and n panels and the KV cache into many blocks.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.image import random_weights, shard_of
from ir.build_io import write_manifest
from ir.program_io import load_program, save_program
from targets.functional import FunctionalError
from targets.runner import run_build, run_functional
from tests.test_compile import TINY_TARGET
from tests.test_reference import CONFIG_PATH, generate, hf_logits_and_greedy, numpy_llama

CONTEXT = 64
PROMPT = [1, 7, 42, 99, 3, 250, 17, 8, 200, 5, 66, 13, 90, 121, 31, 2, 44, 187, 9]  # 19: two prefill chunks
NEW = 6
LOGIT_TOL = 1e-2  # the reference rounds the same ops to 16 bits; only summation order differs
PANELS_16 = TINY_TARGET + "matrix_dim = 16\nmatrix_planes = 1\n"


@pytest.fixture(scope="module")
def weights():
    return random_weights(build_graph(load_model_config("tiny-llama"), "decode", context=CONTEXT), seed=5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, weights) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-llama.npz"
    np.savez(path, **weights)
    return path


def compile_tiny(root: Path, target_text: str, checkpoint: Path, *extra: str) -> Path:
    target = root / "target.toml"
    target.write_text(target_text)
    out = root / "build"
    args = ["compile", "tiny-llama", "--target", str(target), "--context", str(CONTEXT), "--prompt", "32",
            "--prefill-chunk", "16", "--weights", str(checkpoint), "-o", str(out), *extra]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory, checkpoint) -> Path:
    # 7 chips: two stages (6 + the head's 1); the fewest, 6, hold it in one stage since the head's
    # vocabulary shards may be uneven (256 ids on 6 chips)
    return compile_tiny(tmp_path_factory.mktemp("fn"), TINY_TARGET, checkpoint, "--chips", "7")


def reference(weights, precision: str = "fp16", kv: str = "fp16"):
    logits, new = generate(load_model_config("tiny-llama"), weights, PROMPT, NEW, precision, context=CONTEXT, kv=kv)
    return np.stack([logits[len(PROMPT) - 1], *logits[len(PROMPT):]]), new


def test_the_build_spans_stages_and_groups(build):
    plan = json.loads((build / "plan.json").read_text())
    assert len(plan["stages"]) > 1 and max(s["tp"] for s in plan["stages"]) > 1
    assert plan["prefill"]["chunks"] == 2


def test_functional_tokens_and_logits_match_the_reference(build, weights):
    out = run_functional(build, PROMPT, NEW)
    logits, new = reference(weights)
    assert out["tokens"] == new
    assert np.abs(out["logits"] - logits).max() < LOGIT_TOL


def test_functional_logits_match_an_independent_numpy_forward(build, weights):
    """tests/test_reference.py's textbook Llama (whole sequence, f32) on the tokens generated."""
    out = run_functional(build, PROMPT, NEW)
    expected = numpy_llama(json.loads(CONFIG_PATH.read_text()), weights, PROMPT + out["tokens"][:-1])
    assert np.abs(out["logits"] - expected[len(PROMPT) - 1:]).max() < 3e-2
    assert [int(t) for t in expected[len(PROMPT) - 1:].argmax(-1)] == out["tokens"]


def test_functional_tokens_match_hugging_face_transformers(build, weights):
    import transformers

    out = run_functional(build, PROMPT, NEW)
    cfg = json.loads(CONFIG_PATH.read_text())
    hf, greedy = hf_logits_and_greedy(transformers.LlamaForCausalLM, transformers.LlamaConfig, cfg, weights,
                                      PROMPT, out["tokens"])
    assert greedy == out["tokens"]
    assert np.abs(out["logits"] - hf[len(PROMPT) - 1:]).max() < 3e-2


@pytest.mark.parametrize(("precision", "kv"), [("int8", "fp16"), ("fp8", "fp16"), ("fp16", "int8"), ("int8", "fp8")])
def test_many_panels_and_cache_blocks_with_quantized_weights_and_caches(tmp_path, checkpoint, weights, precision,
                                                                        kv):
    """8-bit caches: rows quantized per kv head as they are appended, the scales applied to
    each block's scores and probabilities."""
    out_dir = compile_tiny(tmp_path, PANELS_16, checkpoint, "--precision", precision, "--kv-precision", kv,
                           "--chips", "24")
    out = run_functional(out_dir, PROMPT, NEW)
    logits, new = reference(weights, precision, kv)
    assert out["tokens"] == new
    assert np.abs(out["logits"] - logits).max() < LOGIT_TOL


def test_run_functional_through_the_cli(build, capsys):
    assert main(["run", str(build), "--functional", "--prompt", " ".join(map(str, PROMPT)), "--tokens", str(NEW),
                 "--check-determinism", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["functional"]["tokens"] == f["tokens"]["generated"] == run_functional(build, PROMPT, NEW)["tokens"]
    assert f["hazards"] == [] and f["determinism"]["passed"]
    assert f["determinism"]["functional_digest"] == f["functional"]["digest"]


def test_bad_prompts_and_missing_images_are_one_line_errors(build, tmp_path, capsys):
    assert main(["run", str(build), "--functional", "--prompt", "1 x 3"]) == 1
    assert "--prompt" in capsys.readouterr().err
    assert main(["run", str(build), "--functional", "--prompt", "1", "--tokens", str(CONTEXT + 1)]) == 1
    assert "cache positions" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in build.iterdir():
        if path.name != "sram.img":
            (bare / path.name).write_bytes(path.read_bytes())
    assert main(["run", str(bare), "--functional"]) == 1
    assert "damaged or edited build: sram.img is missing" in capsys.readouterr().err
    write_manifest(bare, "lpu-64k")  # the same build as if compiled with --weights none
    assert main(["run", str(bare), "--functional"]) == 1
    assert "no SRAM image" in capsys.readouterr().err


def test_overlapping_two_buffers_is_caught_by_timing_and_changes_the_numbers(build, tmp_path):
    """A WRITE redirected onto a live buffer (a weight of the last stage): timing mode carries no data,
    yet its SRAM provenance sees the weight's next read find another value's bytes; and the
    functional run's tokens change."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in build.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    memory = json.loads((build / "memory.json").read_text())
    weight = next(r["addr"] for r in memory["stages"][-1]["regions"] if r["kind"] == "param")
    decode = load_program(build / "decode.prog")
    last = memory["stages"][-1]["first_chip"]
    c = {n: a.copy() for n, a in decode.cols.items()}
    victim = np.flatnonzero((c["chip"] == last) & (c["op"] == 1) & (c["dst_bytes"] >= 4) & (c["flags"] == 0))[0]
    c["dst"][victim] = weight
    save_program(decode.with_columns(c),
                 broken / "decode.prog")
    write_manifest(broken, decode.target)  # a deliberate edit: the build must accept it
    hazards = run_build(broken, NEW)["hazards"]
    assert hazards and {h["kind"] for h in hazards} == {"sram-raw"}
    assert any(h["chip"] == last and "it expects the value at" in h["detail"] for h in hazards)
    assert run_functional(broken, PROMPT, NEW)["tokens"] != run_functional(build, PROMPT, NEW)["tokens"]


def test_dropping_a_send_stops_the_functional_run_with_a_clear_error(build, tmp_path):
    decode = load_program(build / "decode.prog")
    keep = np.ones(len(decode), bool)
    keep[np.flatnonzero(decode.cols["op"] == 8)[0]] = False
    broken = tmp_path / "nosend"
    broken.mkdir()
    for p in build.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    save_program(decode.select(keep), broken / "decode.prog")
    write_manifest(broken, decode.target)
    located = r"^chip \d+ c2c\.\d+\[\d+\] @\d+: recv: receive from chip \d+ tag \d+ finds no message$"
    with pytest.raises(FunctionalError, match=located):
        run_functional(broken, PROMPT, NEW)


def test_shards_follow_the_split_axis_and_replicated_heads():
    full = np.arange(24).reshape(2, 12)
    assert shard_of(full, (2, 3), 1, 4, "w").tolist() == [[3, 4, 5], [15, 16, 17]]
    # 2 heads of 6 over 4 chips: each pair of ranks keeps one whole head
    assert shard_of(full, (2, 6), 3, 4, "kv").tolist() == full[:, 6:].tolist()
    # 5 vocabulary rows over 2 chips: the second shard is padded with a zero row
    assert shard_of(np.ones((5, 2)), (3, 2), 1, 2, "embed").tolist() == [[1, 1], [1, 1], [0, 0]]


def test_the_default_build_on_lpu_mini_runs_a_prompt(tmp_path, capsys):
    """What the README shows: compile with defaults (random weights, seed 0; 4096-token context,
    1024-token prompt in chunks), then generate from a short prompt."""
    out = tmp_path / "tiny"
    assert main(["compile", "tiny-llama", "--target", "lpu-mini", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--functional", "--prompt", "1 2 3 4", "--tokens", "16", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    config = load_model_config("tiny-llama")
    weights = random_weights(build_graph(config, "decode", context=4096))
    _, new = generate(config, weights, [1, 2, 3, 4], 16, context=4096)
    assert f["functional"]["tokens"] == new
    assert json.loads((out / "plan.json").read_text())["chips"] > 1


# ---------------------------------------------------------------- mixture of experts

TINY_128K = TINY_TARGET.replace("64 KiB", "128 KiB").replace("1489 B", "2979 B")


def routed_experts(config, weights, prompt: list[int]) -> list[list[int]]:
    """The experts the reference's router picks for each layer and row of the prompt."""
    from compiler.passes.quantize import Quantize
    from ir.reference import run_graph

    graph = Quantize("fp16")(build_graph(config, "prefill", context=CONTEXT, prompt=len(prompt)))
    ids = [op.results[1] for op in graph.ops if op.opcode.value == "topk"]
    probe = graph.__class__(graph.name, graph.inputs, graph.params, graph.state, graph.ops, tuple(ids))
    state = {s.name: np.zeros(s.type.shape, np.float16) for s in graph.state}
    out = run_graph(probe, {"tokens": np.array(prompt, np.int32), "pos": np.arange(len(prompt), dtype=np.int32)},
                    weights, state)
    return [out[v.name].tolist() for v in ids]


@pytest.mark.parametrize(("target", "precision"), [(TINY_128K, "fp16"), ("lpu-mini", "int8")])
def test_tiny_mixtral_routes_at_run_time_under_one_static_schedule(tmp_path, target, precision, capsys):
    """Two prompts that route to different experts decode correctly on the same Program: expert
    passes are static (a fixed count per chip; a routed expert's weights found by address, the
    rows weighed by their routing weights), so cycle counts cannot depend on the routing.
    On 128 KiB chips the experts are spread two per chip; on lpu-mini one chip holds all four
    and each decode pass streams the row's routed expert by address."""
    import transformers

    config = load_model_config("tiny-mixtral")
    weights = random_weights(build_graph(config, "decode", context=CONTEXT), seed=2)
    ckpt = tmp_path / "mix.npz"
    np.savez(ckpt, **weights)
    if target != "lpu-mini":
        (tmp_path / "t.toml").write_text(target)
        target = str(tmp_path / "t.toml")
    out = tmp_path / "mix"
    assert main(["compile", "tiny-mixtral", "--target", target, "--context", str(CONTEXT), "--prompt", "32",
                 "--prefill-chunk", "16", "--precision", precision, "--weights", str(ckpt), "-o", str(out)]) == 0
    prompts = [PROMPT, [250 - t for t in PROMPT]]
    assert routed_experts(config, weights, prompts[0]) != routed_experts(config, weights, prompts[1])
    cycles = set()
    for prompt in prompts:
        got = run_functional(out, prompt, NEW)
        logits, new = generate(config, weights, prompt, NEW, precision, context=CONTEXT)
        assert got["tokens"] == new
        assert np.abs(got["logits"] - np.stack([logits[len(prompt) - 1], *logits[len(prompt):]])).max() < LOGIT_TOL
        figures = run_build(out, NEW)
        assert figures["hazards"] == []
        cycles.add((figures["decode"]["latency_cycles"], figures["prefill"]["latency_cycles"]))
        if precision == "fp16":
            _, greedy = hf_logits_and_greedy(transformers.MixtralForCausalLM, transformers.MixtralConfig,
                                             json.loads(Path("examples/models/tiny-mixtral.json").read_text()),
                                             weights, prompt, got["tokens"])
            assert greedy == got["tokens"]
    assert len(cycles) == 1


def test_experts_split_by_their_features_past_one_expert_per_chip(tmp_path):
    """A group wider than the experts splits each expert's intermediate features (here 2 experts
    over 4 chips): every run of tp / experts ranks holds one expert, ROUTE weighs by its id."""
    cfg = json.loads(Path("examples/models/tiny-mixtral.json").read_text())
    cfg.update(num_attention_heads=8, num_key_value_heads=4, num_local_experts=2, num_experts_per_tok=1)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    config = load_model_config(str(tmp_path / "config.json"))
    weights = random_weights(build_graph(config, "decode", context=CONTEXT), seed=4)
    np.savez(tmp_path / "w.npz", **weights)
    (tmp_path / "t.toml").write_text(TINY_TARGET.replace("64 KiB", "48 KiB").replace("1489 B", "1117 B"))
    out = tmp_path / "b"
    assert main(["compile", str(tmp_path / "config.json"), "--target", str(tmp_path / "t.toml"), "--context",
                 str(CONTEXT), "--prompt", "32", "--prefill-chunk", "16", "--weights", str(tmp_path / "w.npz"),
                 "-o", str(out)]) == 0
    stages = json.loads((out / "plan.json").read_text())["stages"]
    assert any(s["tp"] > 2 and s["units"][0].startswith("layers") for s in stages)
    got = run_functional(out, PROMPT, NEW)
    logits, new = generate(config, weights, PROMPT, NEW, context=CONTEXT)
    assert got["tokens"] == new
    assert np.abs(got["logits"] - np.stack([logits[len(PROMPT) - 1], *logits[len(PROMPT):]])).max() < LOGIT_TOL


@pytest.mark.parametrize(("prompt", "steps"), [(PROMPT[:16], 2), (PROMPT, 3)])
def test_run_json_counts_the_instructions_it_executed(build, prompt, steps):
    """Timing mode runs each phase's Program once; the functional run prefills once and then
    decodes a step per further token, and one more for a prompt that ends inside a chunk (prefill's
    logits are each chunk's last row's): run --json adds up what was actually executed."""
    decode, prefill = (len(load_program(build / f"{phase}.prog")) for phase in ("decode", "prefill"))
    f = run_build(build, tokens=3, prompt=prompt)
    assert f["functional"]["instructions_executed"] == prefill + steps * decode
    assert f["instructions_executed"] == decode + prefill + f["functional"]["instructions_executed"]


def _fed(program, op, fn, producer) -> tuple[int, int]:
    """Instructions `op` (of vector function `fn`, for a VOP), and those whose s_a (s_b for an MXM, its
    activations) was last written by a VOP `producer` of the same chip (taken off its stream, not a READ)."""
    from ir.isa import Op

    c = program.cols
    count = fed = 0
    operand = "s_b" if op == Op.MXM else "s_a"
    for chip in range(program.chips):
        rows = sorted(range(*program.chip_slice(chip).indices(len(program))), key=lambda i: (c["issue"][i], i))
        writer: dict[int, int] = {}
        for i in rows:
            if c["op"][i] == op and (fn is None or c["fn"][i] == fn):
                count += 1
                w = writer.get(int(c[operand][i]))
                fed += w is not None and c["op"][w] == Op.VOP and c["fn"][w] == producer
            if c["s_out"][i] >= 0:
                writer[int(c["s_out"][i])] = i
    return count, fed


def _ropes(program) -> tuple[int, int]:
    """ROPE VOPs, and those whose input stream was last written by a SCALE VOP of the same chip (not a READ)."""
    from ir.isa import Fn, Op

    return _fed(program, Op.VOP, Fn.ROPE, Fn.SCALE)


def test_int8_q_and_k_rope_straight_off_the_projections_scale_and_match_the_reference(tmp_path, checkpoint,
                                                                                      weights):
    """partition.chaining's MXM -> VXM rule: a one-row q|k|v product one MXM panel wide leaves on its scale VOP's
    stream, and both ropes take their slices of it from there (no drain, no re-read) in decode; prefill's chunk
    rows keep the WRITE and READ. Tokens and logits still match the reference."""
    out_dir = compile_tiny(tmp_path, TINY_TARGET, checkpoint, "--precision", "int8")
    decode, prefill = load_program(out_dir / "decode.prog"), load_program(out_dir / "prefill.prog")
    (ropes, chained), (chunk_ropes, chunk_chained) = _ropes(decode), _ropes(prefill)
    assert ropes > 0 and chained == ropes and chunk_ropes > 0 and chunk_chained == 0
    out = run_functional(out_dir, PROMPT, NEW)
    logits, new = reference(weights, "int8")
    assert out["tokens"] == new
    assert np.abs(out["logits"] - logits).max() < LOGIT_TOL
