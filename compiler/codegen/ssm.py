"""Lowering of Mamba's causal conv1d and selective scan: state read once, vector work, state written back."""

from __future__ import annotations

from compiler.codegen.emit import Emitter, need_16_bit
from ir.graph import Op as GraphOp
from ir.isa import Fn


def lower_conv1d(e: Emitter, op: GraphOp) -> None:
    """Mamba's causal depthwise conv on the VXM. The rows, the conv state and the taps are read
    once; one VOP convolves (K multiply-adds per element) and the bias is added; a second VOP
    shifts the rows into the state, which is written back where it was read from, so the next
    chunk (or token) continues from this one's last K-1 inputs."""
    x, w, state = op.operands[:3]
    need_16_bit(op, *op.operands)
    out = op.results[0]
    rows, channels = x.type.shape
    batch, _, held = state.type.shape
    taps = w.type.shape[1]
    shape = {"batch": batch, "channels": channels, "rows": rows, "taps": taps}
    xs, ss, ws = (e.read(v.name) for v in (x, state, w))
    moved = x.type.nbytes + state.type.nbytes
    y = e.vop(Fn.CONV1D, rows, channels * taps, xs, ss, moved + w.type.nbytes, c=ws, args=shape)
    if len(op.operands) == 4:
        bias = op.operands[3]
        y = e.vop(Fn.ADD, rows, channels, y, e.read(bias.name), out.type.nbytes + bias.type.nbytes)
    st = e.vop(Fn.CONVSTATE, batch, channels * held, xs, ss, moved, args=shape)
    e.slots[state.name].ready = e.write(state.name, st[1], st[0], state.type.nbytes)
    e.result(out)
    e.done(out, e.write(out.name, y[1], y[0], out.type.nbytes))


def lower_selective_scan(e: Emitter, op: GraphOp) -> None:
    """Mamba's recurrence on the VXM, sequential over the rows inside one VOP (timed by its
    m x C x N state elements): the f32 state is read once, the per-channel params and the
    per-row operands are joined onto one stream each, and the scan's output stream carries the
    new state (written back once) followed by y (copied off from that offset)."""
    x, dt, a_log, b, c, d, state = op.operands
    need_16_bit(op, *op.operands[:6])
    out = op.results[0]
    rows, channels = x.type.shape
    batch, _, n = state.type.shape
    h = e.read(state.name)
    params = e.vop(Fn.JOIN, 1, channels * (n + 1), e.read(a_log.name), e.read(d.name),
                   a_log.type.nbytes + d.type.nbytes)
    xdb = e.vop(Fn.JOIN, rows, 2 * channels + n, e.read(x.name), e.read(dt.name),
                x.type.nbytes + dt.type.nbytes + b.type.nbytes, c=e.read(b.name))
    per_row = e.vop(Fn.JOIN, rows, 2 * (channels + n), xdb, e.read(c.name), c.type.nbytes)
    shape = {"batch": batch, "channels": channels, "rows": rows, "state": n}
    s = e.vop(Fn.SCAN, rows, channels * n, h, params, state.type.nbytes, c=per_row, args=shape)
    e.slots[state.name].ready = e.write(state.name, s[1], s[0], state.type.nbytes)
    y = e.vop(Fn.COPY, rows, channels, s, bytes_in=out.type.nbytes, offset=state.type.nbytes)
    e.result(out)
    e.done(out, e.write(out.name, y[1], y[0], out.type.nbytes))
