"""`run --functional --check-reference`: the graph IR reference on the same weights and prompts.

The judge must not share the compiler's view of the weights, so it never reads them back from
sram.img (that would inherit any sharding, encoding or addressing mistake). It regenerates the
float weights from the source sram.img's header records (`random`: ir.weights.random_weights,
seed 0, over the model's params in order; a checkpoint: the .npz at the path recorded), quantizes
them itself to the formats decode.ir declares (ir.numerics, one scale per output channel or table
row), and runs decode.ir (the whole model's graph, not one chip's) with ir.reference.run_graph,
token by token: each sequence fed its prompt and then the tokens the machine generated (teacher
forcing, so a near-tie cannot send the two down different texts), every sequence from position 0.

Logits of every generated step must agree within the tolerance of the build's formats (TOLERANCE:
absolute plus relative to the step's largest reference logit), and every token the machine chose
must be the reference's best, or within the tolerance of it (a near-tie). The first step that
disagrees is an ExecutionError naming sequence, step, position and the largest difference.

One discontinuity is not the machine's fault: a mixture-of-experts router whose k-th and (k+1)-th
experts score within ROUTING_TIE of each other can choose either under 16-bit rounding, and the
two choices give logits far apart. Such a step (the reference's margin, ir.reference.routing_margin,
below ROUTING_TIE at any router of the step) is not compared; the figures count it (`ties`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ir.errors import ConfigError, ExecutionError
from ir.graph import Graph, Op
from ir.image_io import loads_image
from ir.numerics import ELEMENT, quantize, quantize_blocks, round_to
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.reference import NUMPY, routing_margin, run_graph
from ir.types import DType
from ir.weights import float_params, random_weights
from targets.build_dir import IMAGE_FILE, Build, load_build


@dataclass(frozen=True, slots=True)
class Tolerance:
    """|machine - reference| <= absolute + relative x max |reference| over a step's logits."""

    absolute: float
    relative: float

    def of(self, reference: np.ndarray) -> float:
        return self.absolute + self.relative * float(np.abs(reference).max())


# Why these: the machine rounds every activation to 16 bits each time it is written to SRAM or sent
# (partial sums of a split matmul, each all-reduce hop, every prefill/decode hand-off), the reference
# once per op, so 16-bit weights differ by a few f16 ulps of the logits (measured below 4e-3 on the
# tiny models). Quantized weights decode to the same values on both sides; what differs is the same
# rounding. An 8-bit KV cache quantizes rows the two sides computed a rounding apart, and one code
# flipped moves a score by a quantization step (1/127 of the row's largest value for int8, up to 1/16
# relative for fp8 e4m3), which softmax and the rest of the model carry to the logits.
TOLERANCE: dict[str, Tolerance] = dict.fromkeys(
    ("fp16", "int8", "fp8", "int4", "nvfp4", "mxfp4", "mxfp8"), Tolerance(1e-2, 3e-3))
KV_TOLERANCE: dict[str, Tolerance] = {
    "fp16": Tolerance(0.0, 0.0),
    "int8": Tolerance(2e-2, 1e-2),
    "fp8": Tolerance(4e-2, 2e-2),
    "nvfp4": Tolerance(8e-2, 4e-2),  # a 4-bit code a step apart: 1/6 of a block's largest value, or more
}


TENSOR_SCALE = ".tensor_scale"  # NVFP4's one f32 scale per matrix, beside `<weight>.scale`

# Router scores are softmax or sigmoid outputs of 16-bit logits (in [0, 1]); the two sides' logits differ
# by a few f16 ulps, under 1e-3 in a score. A gap ten times below the smallest seen to flip is safe.
ROUTING_TIE = 2e-3


def tolerance_for(precision: str, kv_precision: str) -> Tolerance:
    """The build's weight format's tolerance, widened by its KV cache format's."""
    if precision not in TOLERANCE or kv_precision not in KV_TOLERANCE:
        raise ConfigError(f"--check-reference has no stated tolerance for {precision} weights with a "
                          f"{kv_precision} KV cache")
    w, kv = TOLERANCE[precision], KV_TOLERANCE[kv_precision]
    return Tolerance(w.absolute + kv.absolute, w.relative + kv.relative)


def reference_weights(build: Path, graph: Graph, source: str) -> dict[str, np.ndarray]:
    """decode.ir's params as stored, regenerated from the weights' recorded `source`."""
    floats = float_params(graph)
    if source == "random":
        weights = random_weights(floats, seed=0)
    elif source and Path(source).is_file():
        with np.load(source) as data:
            missing = [p.name for p in floats if p.name not in data.files]
            if missing:
                raise ConfigError(f"{source}: the build's checkpoint has no array for '{missing[0]}'")
            weights = {p.name: data[p.name].astype(np.float32) for p in floats}
    else:
        raise ConfigError(f"{build}: --check-reference needs the weights the build was made from; its SRAM image "
                          f"names {source or 'no source'}, which is not a file here")
    return stored_params(graph, weights)


def stored_params(graph: Graph, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float weights in the formats `graph` declares. A param followed by `<name>.scale` is quantized
    along the axis its op contracts over (a matmul weight's input features; an embedding or
    transposed table's row; an expert's input features): per channel for fp8/int8/int4 (scales in
    the `.scale` param's type), in blocks for the block formats (and NVFP4's `.tensor_scale`). Every
    other param is rounded to its declared 16-bit type."""
    types = {p.name: p.type.dtype for p in graph.params}
    axes = _contraction_axes(graph)
    out = {}
    for p in graph.params:
        base = p.name.rsplit(".", 1)[0]
        if p.name.endswith((".scale", TENSOR_SCALE)) and f"{base}.scale" in types and base in types:
            continue
        w = np.asarray(weights[p.name], np.float32)
        if f"{p.name}.scale" not in types:
            out[p.name] = round_to(w, p.type.dtype).astype(ELEMENT[p.type.dtype])
        elif p.type.dtype.block is not None:
            blocks = quantize_blocks(w, p.type.dtype, axes.get(p.name, 0))
            out[p.name], out[f"{p.name}.scale"] = blocks.codes, blocks.scales
            if p.name + TENSOR_SCALE in types:
                out[p.name + TENSOR_SCALE] = blocks.tensor
        else:
            out[p.name], out[f"{p.name}.scale"] = quantize(w, p.type.dtype, axes.get(p.name, 0),
                                                            types[f"{p.name}.scale"])
    return out


def _contraction_axes(graph: Graph) -> dict[str, int]:
    """Quantized tables whose input features run along axis 1 (embed, a transposed head, stacked experts)."""
    axes = {}
    for op in graph.ops:
        for v in op.operands:
            rows = op.opcode in (Opcode.EMBED, Opcode.EXPERTS) or op.attr.get("transpose_b")
            if rows and v.type.dtype not in (DType.F16, DType.BF16, DType.F32, DType.I32):
                axes[v.name] = 1
    return axes


def reference_logits(graph: Graph, params: dict[str, np.ndarray], streams: list[list[int]]
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every position's logits of each stream (a sequence's tokens), run through decode.ir token by
    token, the batch's sequences in lock step (a sequence past its end is fed zeros, not read); and
    per position the smallest routing margin of the step (inf without routers)."""
    batch = graph.inputs[0].type.shape[0]
    if len(streams) != batch:
        raise ConfigError(f"the reference runs {batch} sequences at a time, got {len(streams)}")
    routers = [op for op in graph.ops if op.opcode is Opcode.TOPK]
    probe = Graph(graph.name, graph.inputs, graph.params, graph.state, graph.ops,
                  graph.outputs + tuple(op.operands[0] for op in routers))
    state = {s.name: np.zeros(s.type.shape, NUMPY[s.type.dtype]) for s in graph.state}
    out, margins = [[] for _ in streams], [[] for _ in streams]
    for t in range(max(len(s) for s in streams)):
        ids = np.array([s[t] if t < len(s) else 0 for s in streams], np.int32)
        env = run_graph(probe, {"tokens": ids, "pos": np.full(batch, t, np.int32)}, params, state)
        logits = env["logits"].astype(np.float32)
        for b, s in enumerate(streams):
            if t < len(s):
                out[b].append(logits[b])
                margins[b].append(min((_margin(op, env, params, b) for op in routers), default=np.inf))
    return [np.stack(x) for x in out], [np.array(m) for m in margins]


def _margin(op: Op, env: dict[str, np.ndarray], params: dict[str, np.ndarray], row: int) -> float:
    args = [env[op.operands[0].name][row: row + 1], *(params[v.name] for v in op.operands[1:])]
    return routing_margin(op, args)


@dataclass(frozen=True)
class Reference:
    """A build's model as the reference runs it: decode.ir, its params as stored, the tolerance of
    the build's formats, and the reference logits of every token stream asked so far (`memo`)."""

    graph: Graph
    params: dict[str, np.ndarray]
    tolerance: Tolerance
    memo: dict = field(default_factory=dict)

    @classmethod
    def load(cls, build: Build | str | Path) -> Reference:
        """From a build (verified against its manifest): decode.ir, the image's weight source, the formats."""
        build = build if isinstance(build, Build) else load_build(build)
        options = build.plan["options"]
        graph = parse_graph(build.files.bytes("decode.ir").decode("utf-8"), str(build.path / "decode.ir"))
        _, source = loads_image(build.files.bytes(IMAGE_FILE), str(build.path / IMAGE_FILE))
        return cls(graph, reference_weights(build.path, graph, source),
                   tolerance_for(options["precision"], options["kv_precision"]))

    def logits(self, streams: list[list[int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        key = tuple(tuple(s) for s in streams)
        if key not in self.memo:
            self.memo[key] = reference_logits(self.graph, self.params, streams)
        return self.memo[key]

    def check(self, prompts: list[list[int]], tokens: list[list[int]], logits: list[np.ndarray]) -> dict:
        """Compare a functional run (per sequence: its new tokens and their logits) with the reference;
        returns the figures, or raises ExecutionError at the first step that disagrees."""
        batch = self.graph.inputs[0].type.shape[0]
        vocabulary = self.graph.outputs[0].type.shape[-1]
        for i, seq in enumerate(tokens):
            if logits[i].shape[-1] != vocabulary:  # the host drops the last vocabulary shard's padding
                raise ExecutionError(f"reference check: sequence {i}: the machine's logits have "
                                     f"{logits[i].shape[-1]} columns, the vocabulary {vocabulary}")
            bad = [t for t in seq if not 0 <= t < vocabulary]
            if bad:
                raise ExecutionError(f"reference check: sequence {i}: the machine chose token {bad[0]}, outside the "
                                     f"vocabulary of {vocabulary}")
        worst, ties = 0.0, 0
        for first in range(0, len(prompts), batch):
            group = range(first, first + batch)
            ref, margins = self.logits([prompts[i] + tokens[i][:-1] for i in group])
            for i, r, m in zip(group, ref, margins, strict=True):
                start = len(prompts[i]) - 1
                tied = m[start:] < ROUTING_TIE
                ties += int(tied.sum())
                worst = max(worst, _compare(i, prompts[i], tokens[i], logits[i], r[start:], self.tolerance, tied))
        tol = self.tolerance
        return {"passed": True, "max_abs_diff": round(worst, 6), "ties": ties, "sequences": len(prompts),
                "steps": sum(len(t) for t in tokens), "tolerance": {"absolute": tol.absolute, "relative": tol.relative}}


def check_reference(build: Build | str | Path, prompts: list[list[int]], tokens: list[list[int]],
                    logits: list[np.ndarray]) -> dict:
    """`run --functional --check-reference`'s verdict on a functional run of the build at `build`."""
    return Reference.load(build).check(prompts, tokens, logits)


def _compare(seq: int, prompt: list[int], tokens: list[int], got: np.ndarray, ref: np.ndarray, tol: Tolerance,
             tied: np.ndarray) -> float:
    worst = 0.0
    for step, (g, r, token) in enumerate(zip(got, ref, tokens, strict=True)):
        if tied[step]:
            continue
        diff = np.where(np.isfinite(g), np.abs(g - r), np.inf)
        where = f"sequence {seq}, step {step} (position {len(prompt) - 1 + step})"
        if diff.max() > tol.of(r):
            at = int(np.argmax(diff))
            raise ExecutionError(f"reference check: {where}: logits differ by up to {float(diff.max()):.4g} "
                                 f"(token {at}: {g[at]:.4g} vs the reference's {r[at]:.4g}); the tolerance is "
                                 f"{tol.of(r):.4g}")
        if r[token] < r.max() - tol.of(r):
            raise ExecutionError(f"reference check: {where}: the machine chose token {token}, the reference "
                                 f"{int(np.argmax(r))} ({r.max():.4g} vs {r[token]:.4g})")
        worst = max(worst, float(diff.max()))
    return worst
