"""The EMIT table: each graph opcode's lowering rule (collectives and sharded argmax are lowered in unit.py)."""

from __future__ import annotations

from collections.abc import Callable

from compiler.codegen.attention import lower_attention
from compiler.codegen.emit import (
    Emitter,
    accept,
    argmax,
    binary,
    embed,
    matmul,
    pick_rows,
    rmsnorm,
    rope,
    slice_columns,
    unary,
)
from compiler.codegen.experts import lower_experts, lower_topk
from compiler.codegen.mla import lower_mla_attention
from compiler.codegen.ssm import lower_conv1d, lower_selective_scan
from ir.graph import Op as GraphOp
from ir.isa import Fn
from ir.ops import Opcode

EMIT: dict[Opcode, Callable[[Emitter, GraphOp], None]] = {
    Opcode.MATMUL: matmul,
    Opcode.EMBED: embed,
    Opcode.ADD: binary(Fn.ADD),
    Opcode.MUL: binary(Fn.MUL),
    Opcode.RMSNORM: rmsnorm,
    Opcode.ROPE: rope,
    Opcode.ATTENTION: lower_attention,
    Opcode.SILU: unary(Fn.SILU),
    Opcode.GELU: unary(Fn.GELU),
    Opcode.SOFTMAX: unary(Fn.SOFTMAX),
    Opcode.ARGMAX: argmax,
    Opcode.TOPK: lower_topk,
    Opcode.EXPERTS: lower_experts,
    Opcode.CONV1D: lower_conv1d,
    Opcode.SELECTIVE_SCAN: lower_selective_scan,
    Opcode.SLICE: slice_columns,
    Opcode.ROWS: pick_rows,
    Opcode.MLA_ATTENTION: lower_mla_attention,
    Opcode.ACCEPT: accept,
}
