"""Prefill's LM head runs on each sequence's last row only (HF's logits_to_keep=1).

The prefill graph picks one row a sequence (a ROWS op) before the final norm and the head, so its
`logits` are [batch, vocabulary]; the plan costs the head at one row a sequence a chunk, so its
activations no longer grow with the chunk; a compiled build's prefill writes one row a sequence,
and a functional run takes each sequence's first token from it and agrees with the reference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.partition.shard_cost import shard_cost
from compiler.passes.quantize import Quantize
from ir.memory_map import MemoryMap
from ir.ops import Opcode
from ir.program_io import load_program
from ir.reference import run_graph
from ir.weights import random_weights
from targets.runner import run_build

CONTEXT = 64


def _run(graph, weights, ids: np.ndarray, batch: int) -> dict:
    state = {s.name: np.zeros(s.type.shape, np.float16) for s in graph.state}
    pos = np.tile(np.arange(len(ids) // batch, dtype=np.int32), batch)
    return run_graph(graph, {"tokens": ids, "pos": pos}, weights, state)


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(1, 3), prompt=st.integers(2, 20))
def test_prefill_logits_are_every_sequences_last_row(batch, prompt):
    """The default prefill graph's logits equal the rows of the all-rows graph at each sequence's last
    position, one row a sequence."""
    config = load_model_config("tiny-llama")
    last = Quantize("fp16")(build_graph(config, "prefill", context=CONTEXT, prompt=prompt, batch=batch))
    every = Quantize("fp16")(build_graph(config, "prefill", context=CONTEXT, prompt=prompt, batch=batch,
                                         all_logits=True))
    weights = random_weights(build_graph(config, "decode", context=CONTEXT), seed=3)
    ids = np.random.default_rng(prompt).integers(0, config.vocab_size, batch * prompt).astype(np.int32)
    got = _run(last, weights, ids, batch)["logits"]
    want = _run(every, weights, ids, batch)["logits"][prompt - 1:: prompt]
    assert got.shape == (batch, config.vocab_size)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=0, atol=2e-3)
    assert any(op.opcode is Opcode.ROWS for op in last.ops) and not any(op.opcode is Opcode.ROWS for op in every.ops)


def test_the_heads_work_does_not_grow_with_the_chunk():
    """The head's cost at chunks of a sixteenth and a half of the prompt: its norm and matmul work on
    one row a sequence whatever the chunk; only the unit's input (every row of the chunk, which the
    ROWS op reads) grows with it (what lets a long-context plan take a larger chunk)."""
    config = load_model_config("tiny-llama")
    graph = build_graph(config, "prefill", context=256, prompt=256, batch=2)
    head = list(graph.ops_in("head"))
    small, large = (shard_cost(head, 2, scale) for scale in (1 / 16, 1 / 2))
    flops = {w.opcode: w.flops for w in small.work}
    assert flops == {w.opcode: w.flops for w in large.work}
    assert flops[Opcode.MATMUL] == 2 * 2 * config.hidden_size * (config.vocab_size // 2)  # 2 rows, half the vocabulary
    x = head[0].operands[0].type.nbytes  # every row of the prompt
    assert large.act_bytes - small.act_bytes == x // 2 - x // 16


def _compile(root, model: str, prompt: int, batch: int):
    out = root / f"{model}-{prompt}-b{batch}"
    assert main(["compile", model, "--target", "lpu-mini", "--context", str(CONTEXT), "--prompt", str(prompt),
                 "--prefill-chunk", "16", "--batch", str(batch), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("last"), "tiny-llama", 32, 2)


def test_a_build_writes_one_row_a_sequence(build):
    memory = MemoryMap.loads((build / "memory.json").read_text())
    assert memory.outputs["prefill"]["logits"].rows == 2 and memory.outputs["prefill"]["logits"].row == 15
    assert memory.outputs["decode"]["logits"].rows == 2 and memory.outputs["decode"]["logits"].row is None
    plan = json.loads((build / "plan.json").read_text())
    assert plan["prefill"]["chunks"] == 2


def _chunk(build) -> int:
    return json.loads((build / "plan.json").read_text())["prefill"]["chunk_tokens"]


def test_the_head_row_is_where_the_compiled_prompt_ends(tmp_path):
    """A 40-token build keeps the row of each chunk where a 40-token prompt ends (not a chunk's last):
    such a prompt takes its first token from prefill, a prompt of whole chunks from a decode step more
    (run --json counts them)."""
    out = _compile(tmp_path, "tiny-llama", 40, 1)
    chunk = _chunk(out)
    assert 40 % chunk
    assert MemoryMap.loads((out / "memory.json").read_text()).outputs["prefill"]["logits"].row == 39 % chunk
    decode, prefill = (len(load_program(out / f"{phase}.prog")) for phase in ("decode", "prefill"))
    for prompt, steps in ((list(range(3, 43)), 2), (list(range(3, 3 + chunk)), 3)):
        f = run_build(out, tokens=3, prompt=prompt, check_reference=True)
        assert f["functional"]["instructions_executed"] == prefill + steps * decode and f["reference"]["passed"]


def test_a_recurrent_build_decodes_past_its_head_row(tmp_path, capsys):
    """tiny-mamba compiled for 40 tokens: a prompt of two whole chunks fills both, but prefill's logits
    are another row's, so prefill keeps its first chunk and decode steps run the second (its state would
    otherwise have taken every row); tokens and logits agree with the reference."""
    out = _compile(tmp_path, "tiny-mamba", 40, 1)
    chunk = _chunk(out)
    assert 40 % chunk
    prompt = " ".join(map(str, range(40, 40 + 2 * chunk)))
    assert main(["run", str(out), "--functional", "--check-reference", "--prompt", prompt, "--tokens", "2",
                 "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["hazards"] == [] and f["reference"]["passed"]


@pytest.mark.parametrize("prompts", ["1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; " + " ".join(map(str, range(40, 72))),
                                     "5 17 3; " + " ".join(map(str, range(100, 119)))])
def test_functional_prefill_agrees_with_the_reference(build, prompts, capsys):
    """Two sequences: prompts ending on the head's row (here a chunk's last) take their first token from
    prefill's logits, one ending elsewhere from a decode step at its last position; all agree with the
    reference."""
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", prompts, "--tokens", "3",
                 "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["hazards"] == [] and f["reference"]["passed"] and f["reference"]["sequences"] == 2
    assert all(len(t) == 3 for t in f["functional"]["sequences"])
