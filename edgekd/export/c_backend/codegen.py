"""Turn a full-integer int8 ``.tflite`` into plain C99: weights as const arrays, every activation in one
static arena laid out by edgekd's planner, and calls to int8 kernels with TFLite Micro's reference
numerics (``runtime/edgekd_kernels.c``). One emitter per op, registered with :func:`emitter`.

``kernels="fast"`` swaps convolution, depthwise convolution and fully connected layers for edgekd's
Cortex-M4 kernels (``runtime/edgekd_kernels_fast.c``: SIMD MACs, im2col + register-blocked GEMM), with
the constant data they need prepared here (input offset folded into the bias, blocked weights); the
results are the same bytes. Each layer's choice is recorded (``CModel.layer_kernels``). The scratch
a fast kernel needs (im2col rows, int16 rows, depthwise tap pointers and padding) is planned as an
arena buffer alive only during its layer (``CModel.scratch_placement``), so it shares space with
tensors dead by then.

Less RAM, each bit-exact: a one-row fully connected layer reads its int8 input straight (no scratch);
stride-1 depthwise, pointwise and other convolutions (out channels <= in channels) and elementwise
ADD write over an input the planner proves dead (:func:`_dead_after`); a PAD read by one convolution is
fused into it (the convolution reads the unpadded input: no copy, no padded tensor); and where it lowers
the arena by at least ``LOWMEM_MIN_GAIN`` a convolution takes its slower variant with two int8 im2col
rows of scratch instead of six (:func:`choose_lowmem`). Patch-based execution (MCUNetV2, rows only,
``patches.py``): the first convolutions of a CNN run in row bands into small band buffers, the
planner holding those buffers instead of the prefix's intermediate tensors, where that lowers the
arena by LOWMEM_MIN_GAIN at most PATCH_MAX_OVERHEAD of the MACs recomputed (:func:`choose_patches`).
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export.c_backend import quant as q
from edgekd.export.c_backend.patches import Layer, PatchPlan, plan_bands
from edgekd.graph.planner.lifetimes import OFFLINE_METADATA, View
from edgekd.graph.reader import read_tflite
from edgekd.graph.tflite_model import Operator, Tensor, TFLiteModel, _schema_module

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("edgekd_kernels.h", "edgekd_kernels.c")
FAST_RUNTIME_FILES = ("edgekd_kernels_fast.h", "edgekd_kernels_fast.c")
KERNELS = ("portable", "fast")
DEFAULT_KERNELS = "fast"
FAST_DW_MAX_TAPS = 64  # EK_FAST_DW_MAX_TAPS
PTR_BYTES = 8  # EK_FAST_PTR_BYTES: scratch bytes per pointer (the same arena serves 64-bit host builds)
# A memory-saving variant that costs instructions (a convolution in place or with less scratch) is kept
# only where it lowers the whole arena by at least this fraction.
LOWMEM_MIN_GAIN = 1 / 16
# Patch-based prefixes (patches.py): the band counts tried, and the most recomputed MACs allowed, as a
# fraction of the model's MACs (the recomputation costs instructions).
PATCH_BANDS = (2, 3, 4, 6, 8, 12, 16)
PATCH_MAX_OVERHEAD = 0.10

Emitter = Callable[["_Ctx", Operator, Any], str]
EMITTERS: dict[str, Emitter] = {}


def emitter(*names: str) -> Callable[[Emitter], Emitter]:
    """Register a C emitter for one or more builtin op names."""

    def deco(fn: Emitter) -> Emitter:
        for n in names:
            EMITTERS[n] = fn
        return fn

    return deco


class UnsupportedOpError(EdgekdError):
    """The model uses an op with no C emitter (the firmware writer then skips the C-backend project)."""


def supported_ops() -> list[str]:
    return sorted(EMITTERS)


@dataclass
class CModel:
    """The generated C sources and the facts about them."""

    source: str
    files: dict[str, str]
    arena_size: int
    plan_method: str
    greedy_arena: int
    input: dict[str, Any]
    output: dict[str, Any]
    ops: list[str]
    weight_bytes: int
    order: list[int] = field(default_factory=list)
    kernels: str = "portable"
    layer_kernels: list[dict[str, Any]] = field(default_factory=list)
    scratch_bytes: int = 0  # a static buffer outside the arena (0: the scratch is planned in the arena)
    scratch_placement: list[dict[str, int]] = field(default_factory=list)  # per layer: op, offset, bytes
    patches: dict[str, Any] | None = None  # the patch-based prefix (None: none), see patches.py

    @property
    def sources(self) -> list[str]:
        """The C files to compile (the model and its kernels)."""
        return sorted(f for f in self.files if f.endswith(".c"))

    def write(self, folder: str | os.PathLike) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (out / name).write_text(text)
        return out

    def summary(self) -> dict[str, Any]:
        return {"arena_bytes": self.arena_size, "plan": self.plan_method, "tflm_greedy_arena_bytes": self.greedy_arena,
                "weight_bytes": self.weight_bytes, "ops": self.ops, "input": self.input, "output": self.output,
                "files": sorted(self.files), "kernels": self.kernels, "scratch_bytes": self.scratch_bytes,
                "scratch_placement": self.scratch_placement, "layer_kernels": self.layer_kernels,
                "patches": self.patches}  # fmt: skip


# ---- helpers ---------------------------------------------------------------------------------------


def _c_array(name: str, ctype: str, values: np.ndarray, align: bool = False) -> str:
    vals = np.asarray(values).reshape(-1).tolist()
    rows = [", ".join(str(int(v)) for v in vals[i : i + 24]) for i in range(0, len(vals), 24)] or ["0"]
    attr = " __attribute__((aligned(4)))" if align else ""
    body = ",\n    ".join(rows)
    return f"static const {ctype} {name}[{max(len(vals), 1)}]{attr} = {{\n    {body}\n}};\n"


def _shape4(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    s = (1,) * (4 - len(shape)) + tuple(shape)
    if len(s) != 4:
        raise ValueError(shape)
    return s  # type: ignore[return-value]


def _s4(shape: tuple[int, ...]) -> str:
    n, h, w, c = _shape4(shape)
    return f"{{{n}, {h}, {w}, {c}}}"


def _ints(vals: list[int] | tuple[int, ...], n: int = 6, fill: int = 0) -> str:
    v = list(vals) + [fill] * (n - len(vals))
    return "{" + ", ".join(str(int(x)) for x in v) + "}"


class _Ctx:
    def __init__(
        self,
        m: TFLiteModel,
        offsets: dict[int, int],
        kernels: str = "portable",
        scratch_at: dict[int, int] | None = None,
        inplace: bool = True,
        lowmem: set[int] | None = None,
        patch: PatchPlan | None = None,
    ) -> None:
        self.m = m
        self.patch = patch  # a prefix run band by band (None: none)
        self.ptr_expr: dict[int, str] = {}  # tensor -> its C pointer while a patch's band runs
        self.patch_scratch = "0"  # the patch scratch's C pointer (set by the generator)
        self.inplace = inplace  # let layers proven safe write their output over their input
        self.lowmem = lowmem  # operators that may take a slower memory-saving variant (None: every one)
        self.lowmem_ops: set[int] = set()  # operators that have one
        self.offsets = offsets
        self.fast = kernels == "fast"
        self.scratch_at = scratch_at if scratch_at is not None else {}  # op -> arena offset of its scratch
        self.op_scratch: dict[int, int] = {}  # op -> scratch bytes its kernel needs
        self.aliases: dict[int, int] = {}  # output tensor -> the input it overwrites (in-place ops)
        self.uses = Counter(t for o in m.operators for t in o.inputs)
        self.layers: list[dict[str, Any]] = []
        s = _schema_module()
        self.mt = s.ModelT.InitFromPackedBuf(bytearray(m.data), 0)
        self.decls: list[str] = []
        self.const_names: dict[tuple[int, str], str] = {}
        self.weight_bytes = 0
        self.fused_pads = _fusable_pads(self) if inplace else {}  # PAD output -> (input, top, left)

    def t(self, i: int) -> Tensor:
        return self.m.tensors[i]

    def options(self, op: Operator) -> Any:
        return self.mt.subgraphs[0].operators[op.index].builtinOptions

    def data(self, t: Tensor) -> np.ndarray:
        buf = self.mt.buffers[t.buffer]
        raw = np.asarray(buf.data if buf.data is not None else [], dtype=np.uint8).tobytes()
        if not raw and buf.offset > 1:  # large models keep buffers after the flatbuffer
            raw = self.m.data[buf.offset : buf.offset + buf.size]
        return np.frombuffer(raw, dtype=np.dtype(t.dtype)).reshape(t.shape or ())

    def const(self, t: Tensor, ctype: str = "int8_t") -> str:
        key = (t.index, ctype)
        if key not in self.const_names:
            name = f"k_t{t.index}"
            arr = self.data(t)
            self.decls.append(_c_array(name, ctype, arr, align=True))
            self.weight_bytes += arr.nbytes
            self.const_names[key] = name
        return self.const_names[key]

    def array(self, name: str, ctype: str, values: list[int] | np.ndarray) -> str:
        self.decls.append(_c_array(name, ctype, np.asarray(values), align=True))
        self.weight_bytes += len(values) * (1 if ctype == "int8_t" else 4)
        return name

    def kernel(self, op: Operator, fn: str, scratch: int = 0) -> str:
        """Record ``fn`` as operator ``op``'s kernel and the scratch bytes it needs."""
        self.layers.append({"op": op.index, "opcode": op.opcode, "kernel": fn})
        if scratch:
            self.op_scratch[op.index] = scratch
        return fn

    def scratch_ptr(self, op: Operator) -> str:
        """Operator ``op``'s scratch: its arena buffer, alive only during that operator (0: none)."""
        if op.index not in self.op_scratch:
            return "0"
        if self.patch is not None and op.index in self.patch.ops:  # the kernel scratch opens the patch's
            return self.patch_scratch
        return f"(ek_arena + {self.scratch_at[op.index]})"

    def may_lowmem(self, op: Operator) -> bool:
        """Record that ``op`` has a slower memory-saving variant; whether it may take it."""
        self.lowmem_ops.add(op.index)
        return self.lowmem is None or op.index in self.lowmem

    def ptr(self, i: int) -> str:
        """A C expression for tensor ``i``'s int8 data (arena slot or const array)."""
        t = self.t(i)
        if t.has_data:
            return f"(const int8_t *){self.const(t)}"
        return self.out(i)

    def out(self, i: int) -> str:
        return self.ptr_expr.get(i, f"(ek_arena + {self.offsets[i]})")


def _zp(t: Tensor) -> int:
    return int(t.zero_point[0]) if t.zero_point else 0


def _scale(t: Tensor) -> float:
    return float(t.scale[0]) if t.scale else 0.0


# ---- emitters --------------------------------------------------------------------------------------


_Multipliers = Callable[[bool], str]


class _Geom(NamedTuple):
    """A convolution's geometry; ``src``: the tensor it reads (a fused PAD's input: ``ph``, ``pw``
    include that PAD's leading rows and columns)."""

    src: int
    ih: int
    iw: int
    ic: int
    oh: int
    ow: int
    oc: int
    fh: int
    fw: int
    sh: int
    sw: int
    dh: int
    dw: int
    ph: int
    pw: int


def _geometry(ctx: _Ctx, op: Operator, opt: Any) -> _Geom:
    inp, flt, out = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    _, ih, iw, ic = _shape4(inp.shape)
    _, oh, ow, oc = _shape4(out.shape)
    fh, fw = int(flt.shape[1]), int(flt.shape[2])
    sh, sw = opt.strideH, opt.strideW
    dh, dw = max(1, opt.dilationHFactor), max(1, opt.dilationWFactor)
    same = opt.padding == 0
    ph = q.same_padding(ih, fh, sh, dh, oh) if same else 0
    pw = q.same_padding(iw, fw, sw, dw, ow) if same else 0
    src, top, left = ctx.fused_pads.get(op.inputs[0], (op.inputs[0], 0, 0))
    _, ih, iw, _ = _shape4(ctx.t(src).shape)
    return _Geom(src, ih, iw, ic, oh, ow, oc, fh, fw, sh, sw, dh, dw, ph + top, pw + left)


def _readers(m: TFLiteModel) -> dict[int, list[Operator]]:
    """Tensor -> the operators reading it."""
    readers: dict[int, list[Operator]] = defaultdict(list)
    for o in m.operators:
        for t in set(o.inputs):
            readers[t].append(o)
    return readers


def _fusable_pads(ctx: _Ctx) -> dict[int, tuple[int, int, int]]:
    """PAD outputs a convolution can read without the copy (PAD output -> (its input, top, left)):
    padding in height and width only, with the convolution input's zero point (what the kernels read
    outside the image), the one reader a (depthwise) convolution, the PAD's output not a model output,
    its input an activation, no offline offsets (a malformed PAD is left to its emitter)."""
    m = ctx.m
    if OFFLINE_METADATA in m.metadata:
        return {}
    readers = _readers(m)
    fused = {}
    for op in m.operators:
        if op.opcode not in ("PAD", "PADV2") or len(op.outputs) != 1:
            continue
        try:
            how = _fusable_pad(ctx, op, readers)
        except _MALFORMED:  # not fused: the PAD's own emitter names the problem
            continue
        if how is not None:
            fused[op.outputs[0]] = how
    return fused


def _fusable_pad(ctx: _Ctx, op: Operator, readers: dict[int, list[Operator]]) -> tuple[int, int, int] | None:
    """(input, top, left) of PAD ``op`` when the one convolution reading it can pad as it reads."""
    src, out = op.inputs[0], op.outputs[0]
    rd = readers[out]
    if len(rd) != 1 or ctx.uses[out] != 1 or rd[0].opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return None
    a, b, pads_t = ctx.t(src), ctx.t(out), ctx.t(op.inputs[1])
    if rd[0].inputs[0] != out or out in ctx.m.outputs or a.has_data or a.is_variable or len(a.shape) != 4:
        return None
    if not pads_t.has_data or (_zp(a), _scale(a)) != (_zp(b), _scale(b)):
        return None
    pads = ctx.data(pads_t).reshape(-1, 2).astype(np.int64)
    value = _zp(b)
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = int(ctx.data(ctx.t(op.inputs[2])).reshape(-1)[0])
    if pads.shape != (4, 2) or pads.min() < 0 or pads[0].any() or pads[3].any() or value != _zp(b):
        return None
    return src, int(pads[1, 0]), int(pads[2, 0])


def _conv_setup(ctx: _Ctx, op: Operator, opt: Any, depthwise: bool) -> tuple[str, _Multipliers, str]:
    """Declare operator ``op``'s parameters; (``&p, in``, the multiplier arguments' declarer, ``out``):
    ``ms(fast)`` declares ``m, s`` for a reference kernel, one ek_requant table for a fast one."""
    inp, flt, out = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    g = _geometry(ctx, op, opt)
    oc, fh, fw, sh, sw, dh, dw, ph, pw = g.oc, g.fh, g.fw, g.sh, g.sw, g.dh, g.dw, g.ph, g.pw
    ic = g.ic
    if not depthwise and int(flt.shape[3]) != ic:
        raise EdgekdError(f"{ctx.m.source}: CONV_2D operator {op.index} is a grouped convolution "
                          f"(filter depth {int(flt.shape[3])}, input depth {ic}); the C backend does not support groups")  # fmt: skip
    src = ctx.t(g.src)
    lo, hi = q.activation_range(opt.fusedActivationFunction, _scale(out), _zp(out))
    in_s, out_s = _scale(inp), _scale(out)
    mults, shifts = [], []
    for c in range(oc):
        fs = flt.scale[c] if len(flt.scale) > 1 else flt.scale[0]
        m_, s_ = q.quantize_multiplier(float(in_s) * float(fs) / float(out_s))
        mults.append(m_)
        shifts.append(s_)
    dm = int(getattr(opt, "depthMultiplier", 1) or 1) if depthwise else 1
    if depthwise and oc != ic * dm:
        dm = oc // ic
    k = op.index

    def fields(ih: int, oh: int, pad_h: int) -> str:
        n, _, w, c = _shape4(src.shape)
        on, _, ow, ocn = _shape4(out.shape)
        return (f"{{{{{n}, {ih}, {w}, {c}}}, {{{on}, {oh}, {ow}, {ocn}}}, {fh}, {fw}, {sh}, {sw}, {dh}, {dw}, "
                f"{pad_h}, {pw}, {dm}, {-_zp(inp)}, {_zp(out)}, {lo}, {hi}}}")  # fmt: skip

    bands = ctx.patch.bands.get(k) if ctx.patch is not None else None
    if bands is None:
        ctx.decls.append(f"static const ek_conv_params p{k} = {fields(g.ih, g.oh, ph)};\n")
        param = f"&p{k}"
    else:  # one parameter set per band: its input and output rows, the padding above its first row
        rows = ",\n    ".join(fields(b.in_rows, b.out_rows, b.pad_h) for b in bands)
        ctx.decls.append(f"static const ek_conv_params p{k}[{len(bands)}] = {{\n    {rows}\n}};\n")
        param = f"&p{k}[ek_band]"
    return (
        f"{param}, {ctx.ptr(g.src)}",
        _multipliers(ctx, k, mults, shifts, _zp(out)),
        ctx.out(op.outputs[0]),
    )


def _multipliers(ctx: _Ctx, k: int, mults: list[int], shifts: list[int], out_zp: int) -> _Multipliers:
    """Operator ``k``'s multiplier arguments, declared when the kernel is chosen: ``m{k}, s{k}``
    (reference), ``rq{k}`` (fast kernels)."""

    def declare(fast: bool) -> str:
        if not fast:
            return f"{ctx.array(f'm{k}', 'int32_t', mults)}, {ctx.array(f's{k}', 'int32_t', shifts)}"
        rows = [requant_entry(m_, s_, out_zp) for m_, s_ in zip(mults, shifts, strict=True)]
        body = ",\n    ".join("{" + ", ".join(map(str, r)) + "}" for r in rows)
        ctx.decls.append(f"static const ek_requant rq{k}[{len(rows)}] = {{\n    {body}\n}};\n")
        ctx.weight_bytes += 16 * len(rows)
        return f"rq{k}"

    return declare


def requant_entry(mult: int, shift: int, zp: int) -> tuple[int, int, int, int]:
    """``ek_requant`` of (mult, shift) and output zero point ``zp``: (mult, rshift, rnd_lo, rnd_hi), see
    edgekd_kernels_fast.h (the one-SMLAL form for right shifts 1..23, else the reference)."""
    e = -shift
    if not 1 <= e <= 23:
        return mult, shift - 32, 0, zp
    rnd = (1 << 30) + (1 << (30 + e)) + zp * (1 << (31 + e))  # a Python int: exact, then two's complement
    return mult, e - 1, int(_wrap32(np.int64(rnd & 0xFFFFFFFF))), int(_wrap32(np.int64(rnd >> 32)))


def _bias(ctx: _Ctx, op: Operator) -> str:
    return ctx.const(ctx.t(op.inputs[2]), "int32_t") if len(op.inputs) > 2 and op.inputs[2] >= 0 else "0"


def _folded_bias(ctx: _Ctx, op: Operator, w: np.ndarray, in_offset: int) -> str:
    """``bias + in_offset * sum(w[oc])`` (int32 wrap-around, as the reference kernel accumulates):
    the fast kernels multiply raw int8 inputs. ``w``: (channels, depth)."""
    has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
    bias = ctx.data(ctx.t(op.inputs[2])).astype(np.int64) if has_bias else np.zeros(len(w), np.int64)
    return ctx.array(f"b{op.index}", "int32_t", _wrap32(bias + in_offset * w.astype(np.int64).sum(axis=1)))


def _wrap32(v: np.ndarray) -> np.ndarray:
    return (np.asarray(v, dtype=np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)


def block_weights(w: np.ndarray) -> np.ndarray:
    """GEMM weights ``(channels, depth)`` as ek_fast's layout: depth zero-padded to a multiple of 4, then
    per channel pair and 4-deep chunk the pair's 4 + 4 bytes; an odd last channel 4 bytes a chunk."""
    oc, k = w.shape
    k4 = -(-k // 4) * 4
    padded = np.zeros((oc, k4), np.int8)
    padded[:, :k] = w
    pairs = oc // 2
    head = padded[: 2 * pairs].reshape(pairs, 2, k4 // 4, 4).transpose(0, 2, 1, 3).reshape(-1)
    return np.concatenate([head, padded[2 * pairs :].reshape(-1)])


def pack_depthwise(w: np.ndarray) -> np.ndarray:
    """Depthwise weights ``(taps, channels)`` (channels a multiple of 4) as ek_fast's int32 words: per
    4 channels and tap, ``c0 | c2 << 16`` and ``c1 | c3 << 16``."""
    taps, ch = w.shape
    g = w.astype(np.int64).reshape(taps, ch // 4, 4).transpose(1, 0, 2)
    words = (g[..., [0, 1]] & 0xFFFF) | (g[..., [2, 3]] << 16)
    return _wrap32(words.reshape(-1))


@emitter("CONV_2D")
def _conv(ctx: _Ctx, op: Operator, opt: Any) -> str:
    head, ms, out = _conv_setup(ctx, op, opt, False)
    flt = ctx.t(op.inputs[1])
    if not ctx.fast:
        return (
            f"{ctx.kernel(op, 'ek_conv2d')}({head}, {ctx.const(flt)}, {_bias(ctx, op)}, {ms(False)}, {out});"
        )
    w = ctx.data(flt).reshape(flt.shape[0], -1)
    k4 = -(-w.shape[1] // 4) * 4
    bias = _folded_bias(ctx, op, w, -_zp(ctx.t(op.inputs[0])))
    wb = ctx.array(f"w{op.index}", "int8_t", block_weights(w))
    g = _geometry(ctx, op, opt)
    direct = _direct_pointwise(g)
    if direct and _inplace_pointwise(ctx, g):
        ctx.aliases[op.outputs[0]] = g.src
    if direct:  # int16 pairs of 2 rows
        return f"{ctx.kernel(op, 'ek_fast_conv2d', 4 * k4)}({head}, {wb}, {bias}, {ms(True)}, {out}, {ctx.scratch_ptr(op)});"
    ring = _inplace_conv(ctx, op, g, k4)
    if ctx.may_lowmem(op) and ring:  # two int8 im2col rows + a ring of input rows, over the input
        ctx.aliases[op.outputs[0]] = g.src
        fn = ctx.kernel(op, "ek_fast_conv2d_inplace", 2 * k4 + ring)
        return f"{fn}(&p{op.index}, {out}, {wb}, {bias}, {ms(True)}, {ctx.scratch_ptr(op)});"
    if ctx.may_lowmem(op):  # two int8 im2col rows
        fn = ctx.kernel(op, "ek_fast_conv2d_lowmem", 2 * k4)
    else:  # int16 pairs of 2 rows + 2 im2col rows
        fn = ctx.kernel(op, "ek_fast_conv2d", 6 * k4)
    return f"{fn}({head}, {wb}, {bias}, {ms(True)}, {out}, {ctx.scratch_ptr(op)});"


@emitter("DEPTHWISE_CONV_2D")
def _dwconv(ctx: _Ctx, op: Operator, opt: Any) -> str:
    head, ms, out = _conv_setup(ctx, op, opt, True)
    inp, flt = ctx.t(op.inputs[0]), ctx.t(op.inputs[1])
    ch, taps = _shape4(inp.shape)[3], int(flt.shape[1] * flt.shape[2])
    if not ctx.fast or flt.shape[3] != ch or ch % 4 or taps > FAST_DW_MAX_TAPS:
        fn = ctx.kernel(op, "ek_depthwise_conv2d")
        return f"{fn}({head}, {ctx.const(flt)}, {_bias(ctx, op)}, {ms(False)}, {out});"
    w = ctx.data(flt).reshape(taps, ch)
    bias = _folded_bias(ctx, op, w.T, -_zp(inp))
    wp = ctx.array(f"w{op.index}", "int32_t", pack_depthwise(w))
    g = _geometry(ctx, op, opt)
    inplace = _inplace_scratch(ctx, op, g)
    if inplace:
        ctx.aliases[op.outputs[0]] = g.src
        fn = ctx.kernel(op, "ek_fast_depthwise_conv2d_inplace", inplace)
        return f"{fn}(&p{op.index}, {out}, {wp}, {bias}, {ms(True)}, {ctx.scratch_ptr(op)});"
    fn = ctx.kernel(op, "ek_fast_depthwise_conv2d", taps * PTR_BYTES + ch)  # EK_FAST_DW_SCRATCH
    return f"{fn}({head}, {wp}, {bias}, {ms(True)}, {out}, {ctx.scratch_ptr(op)});"


def _dead_after(ctx: _Ctx, t: int) -> bool:
    """Whether activation tensor ``t`` may be overwritten by the output of the one operator reading it:
    planned in the arena, read by one operator once, not a model input or output, no offline offsets."""
    m, tensor = ctx.m, ctx.t(t)
    if (
        not ctx.inplace
        or tensor.has_data
        or tensor.is_variable
        or ctx.uses[t] != 1
        or t in (*m.inputs, *m.outputs)
        or (ctx.patch is not None and t in ctx.patch.band_tensors)
    ):
        return False
    return OFFLINE_METADATA not in m.metadata


def _direct_pointwise(g: _Geom) -> bool:
    """ek_fast_conv2d's ``direct`` case: 1x1, stride 1, no padding, in channels a multiple of 4 (rows
    read straight from the input, no im2col)."""
    pointwise = (g.fh, g.fw, g.sh, g.sw, g.ph, g.pw) == (1, 1, 1, 1, 0, 0) and g.ic % 4 == 0
    return pointwise and (g.oh, g.ow) == (g.ih, g.iw)


def _inplace_pointwise(ctx: _Ctx, g: _Geom) -> bool:
    """A direct pointwise convolution may write over its input when out channels <= in channels: each
    pair of pixels is read (expanded to int16 in the scratch) before its outputs are stored, and they
    end before unread input starts."""
    return g.oc <= g.ic and _dead_after(ctx, g.src)


def _same_rows(ctx: _Ctx, op: Operator, g: _Geom) -> bool:
    """Stride 1, the output's batches, height and width the input's, the input dead after ``op``."""
    same = (g.sh, g.sw, g.oh, g.ow) == (1, 1, g.ih, g.iw)
    n_in, n_out = _shape4(ctx.t(g.src).shape)[0], _shape4(ctx.t(op.outputs[0]).shape)[0]
    return same and n_in == n_out and _dead_after(ctx, g.src)


def _inplace_conv(ctx: _Ctx, op: Operator, g: _Geom, k4: int) -> int:
    """Ring bytes (pad_h + 1 input rows) of the in-place convolution for ``op``, or 0 where it is not
    safe or saves nothing: :func:`_same_rows`, out channels <= in channels (output row R ends before
    input row R + 1), scratch smaller than the output (EK_FAST_CONV_INPLACE_SCRATCH)."""
    if g.oc > g.ic or not _same_rows(ctx, op, g):
        return 0
    ring = (g.ph + 1) * g.iw * g.ic
    return ring if 2 * k4 + ring < ctx.t(op.outputs[0]).nbytes else 0


def _inplace_scratch(ctx: _Ctx, op: Operator, g: _Geom) -> int:
    """Scratch bytes of the in-place depthwise kernel for ``op``, or 0 where it is not safe or saves
    nothing: stride 1 and the output shape the input's, an activation tensor read by this operator
    only (dead after it; not a model input or output), no offline offsets, ring smaller than the output."""
    if g.oc != g.ic or not _same_rows(ctx, op, g):
        return 0
    taps = g.fh * g.fw
    need = (taps + g.fh) * PTR_BYTES + g.ic + (g.ph + 1) * g.iw * g.ic  # EK_FAST_DW_INPLACE_SCRATCH
    return need if need < ctx.t(op.outputs[0]).nbytes else 0


@emitter("FULLY_CONNECTED")
def _fc(ctx: _Ctx, op: Operator, opt: Any) -> str:
    inp, flt, out = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    out_depth, accum = int(flt.shape[0]), int(flt.shape[1])
    n_in = int(np.prod(inp.shape))
    batches = n_in // accum
    per_channel = len(flt.scale) > 1
    if per_channel:
        pairs = [q.quantize_multiplier(float(_scale(inp)) * float(s) / float(_scale(out))) for s in flt.scale]
    else:  # GetQuantizedConvolutionMultipler: the input*filter product in float32
        prod = float(np.float32(_scale(inp)) * np.float32(_scale(flt)))
        pairs = [q.quantize_multiplier(prod / float(_scale(out)))]
    lo, hi = q.activation_range(opt.fusedActivationFunction if opt is not None else 0, _scale(out), _zp(out))
    k = op.index
    ctx.decls.append(
        f"static const ek_fc_params p{k} = {{{batches}, {accum}, {out_depth}, {int(per_channel)}, "
        f"{-_zp(inp)}, {-_zp(flt)}, {_zp(out)}, {lo}, {hi}}};\n"
    )
    ms = _multipliers(ctx, k, [p[0] for p in pairs], [p[1] for p in pairs], _zp(out))
    head, o = f"&p{k}, {ctx.ptr(op.inputs[0])}", ctx.out(op.outputs[0])
    if not ctx.fast or _zp(flt) != 0:
        fn = ctx.kernel(op, "ek_fully_connected")
        return f"{fn}({head}, {ctx.const(flt)}, {_bias(ctx, op)}, {ms(False)}, {o});"
    w = ctx.data(flt).reshape(out_depth, accum)
    bias = _folded_bias(ctx, op, w, -_zp(inp))
    wb = ctx.array(f"w{k}", "int8_t", block_weights(w))
    k4 = -(-accum // 4) * 4
    # one batch: straight from the input; more: int16 pairs of 2 rows (+ the rows zero-padded to k4)
    fn = ctx.kernel(op, "ek_fast_fully_connected", 0 if batches == 1 else 2 * k4 * (2 + (accum != k4)))
    return f"{fn}({head}, {wb}, {bias}, {ms(True)}, {o}, {ctx.scratch_ptr(op)});"


@emitter("AVERAGE_POOL_2D", "MAX_POOL_2D")
def _pool(ctx: _Ctx, op: Operator, opt: Any) -> str:
    inp, out = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    _, ih, iw, _ = _shape4(inp.shape)
    _, oh, ow, _ = _shape4(out.shape)
    fh, fw, sh, sw = opt.filterHeight, opt.filterWidth, opt.strideH, opt.strideW
    same = opt.padding == 0
    ph = q.same_padding(ih, fh, sh, 1, oh) if same else 0
    pw = q.same_padding(iw, fw, sw, 1, ow) if same else 0
    lo, hi = q.activation_range(opt.fusedActivationFunction, _scale(out), _zp(out))
    k = op.index
    ctx.decls.append(
        f"static const ek_pool_params p{k} = {{{_s4(inp.shape)}, {_s4(out.shape)}, {fh}, {fw}, {sh}, {sw}, "
        f"{ph}, {pw}, {lo}, {hi}}};\n"
    )
    fn = "ek_avg_pool" if op.opcode == "AVERAGE_POOL_2D" else "ek_max_pool"
    if ctx.fast and fn == "ek_avg_pool" and fh * fw <= 256 and _shape4(inp.shape)[3] % 4 == 0:
        fn = "ek_fast_avg_pool"
    return f"{ctx.kernel(op, fn)}(&p{k}, {ctx.ptr(op.inputs[0])}, {ctx.out(op.outputs[0])});"


@emitter("ADD")
def _add(ctx: _Ctx, op: Operator, opt: Any) -> str:
    a, b, out = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    left = 20
    twice_max = 2 * float(max(np.float32(_scale(a)), np.float32(_scale(b))))
    m1, s1 = q.quantize_multiplier(_scale(a) / twice_max)
    m2, s2 = q.quantize_multiplier(_scale(b) / twice_max)
    mo, so = q.quantize_multiplier(twice_max / ((1 << left) * _scale(out)))
    lo, hi = q.activation_range(opt.fusedActivationFunction if opt is not None else 0, _scale(out), _zp(out))
    size = int(np.prod(out.shape)) if out.shape else 1
    bcast = tuple(a.shape) != tuple(b.shape)
    od = [1] * (6 - len(out.shape)) + list(out.shape)

    def strides(shape: tuple[int, ...]) -> list[int]:
        d = [1] * (6 - len(shape)) + list(shape)
        st, s = [0] * 6, 1
        for i in range(5, -1, -1):
            st[i] = 0 if (d[i] == 1 and od[i] != 1) else s
            s *= d[i]
        return st

    k = op.index
    ctx.decls.append(
        f"static const ek_add_params p{k} = {{{size}, {-_zp(a)}, {-_zp(b)}, {_zp(out)}, {left}, {m1}, {s1}, {m2}, {s2}, "
        f"{mo}, {so}, {lo}, {hi}, {int(bcast)}, {_ints(od)}, {_ints(strides(a.shape))}, {_ints(strides(b.shape))}}};\n"
    )
    over = [t for t in op.inputs[:2] if ctx.t(t).nbytes == out.nbytes and _dead_after(ctx, t)]
    if not bcast and over:  # elementwise: out[i] is stored after in1[i] and in2[i] are read
        ctx.aliases[op.outputs[0]] = over[0]
    return f"ek_add(&p{k}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.inputs[1])}, {ctx.out(op.outputs[0])});"


@emitter("MEAN")
def _mean(ctx: _Ctx, op: Operator, opt: Any) -> str:
    inp, ax, out = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    rank = len(inp.shape)
    axes = {int(v) % rank for v in ctx.data(ax).reshape(-1)}
    red = [1 if d in axes else 0 for d in range(rank)]
    count = int(np.prod([inp.shape[d] for d in axes])) if axes else 1
    out_size = int(np.prod(out.shape)) if out.shape else 1
    mult, shift = q.quantize_multiplier(float(_scale(inp)) / float(_scale(out)))
    n_shift = min(count.bit_length() - 1, 32, 31 + shift)  # floor(log2(count)), clamped as TFLM does
    mult = (mult << n_shift) // count
    shift -= n_shift
    k = op.index
    ctx.decls.append(
        f"static const ek_mean_params p{k} = {{{_ints(inp.shape)}, {_ints(red)}, {rank}, {out_size}, {count}, "
        f"{_zp(inp)}, {_zp(out)}, {mult}, {shift}}};\n"
    )
    return f"ek_mean(&p{k}, {ctx.ptr(op.inputs[0])}, {ctx.out(op.outputs[0])});"


@emitter("SOFTMAX")
def _softmax(ctx: _Ctx, op: Operator, opt: Any) -> str:
    inp, out = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    if _zp(out) != -128 or abs(_scale(out) - 1 / 256) > 1e-12:
        raise EdgekdError(f"{ctx.m.source}: SOFTMAX operator {op.index} output is not int8 with scale 1/256 and "
                          "zero point -128 (TFLite Micro requires it); re-export the model")  # fmt: skip
    beta = float(opt.beta) if opt is not None else 1.0
    real = min(beta * float(_scale(inp)) * float(1 << 26), float((1 << 31) - 1))
    mult, left = q.quantize_multiplier(real)
    radius = math.floor(1.0 * ((1 << 5) - 1) * (1 << 26) / (1 << left))
    depth = int(inp.shape[-1])
    outer = int(np.prod(inp.shape)) // depth
    k = op.index
    ctx.decls.append(
        f"static const ek_softmax_params p{k} = {{{outer}, {depth}, {mult}, {left}, {-radius}}};\n"
    )
    return f"ek_softmax(&p{k}, {ctx.ptr(op.inputs[0])}, {ctx.out(op.outputs[0])});"


@emitter("PAD", "PADV2")
def _pad(ctx: _Ctx, op: Operator, opt: Any) -> str:
    inp, pads_t, out = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    if out.index in ctx.fused_pads:  # the convolution reading it pads as it reads (no copy)
        ctx.aliases[out.index] = View(inp.index)
        ctx.kernel(op, "fused")
        return "/* fused into the convolution that reads it: no copy */"
    pads = ctx.data(pads_t).reshape(-1, 2)
    value = _zp(out)
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = int(ctx.data(ctx.t(op.inputs[2])).reshape(-1)[0])
    rank = len(inp.shape)
    k = op.index
    ctx.decls.append(
        f"static const ek_pad_params p{k} = {{{rank}, {_ints(inp.shape)}, {_ints(out.shape)}, "
        f"{_ints([int(p[0]) for p in pads])}, {value}}};\n"
    )
    return f"ek_pad(&p{k}, {ctx.ptr(op.inputs[0])}, {ctx.out(op.outputs[0])});"


@emitter("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
def _reshape(ctx: _Ctx, op: Operator, opt: Any) -> str:
    out = ctx.t(op.outputs[0])
    return f"ek_copy({ctx.ptr(op.inputs[0])}, {ctx.out(op.outputs[0])}, {out.nbytes});"


# ---- planning and generation -----------------------------------------------------------------------


def _check(m: TFLiteModel) -> None:
    if m.is_float() or m.kind in ("float", "float16", "hybrid", "integer_float_io"):
        raise EdgekdError(
            f"{m.source}: the model is {m.kind}; the C backend needs a full-integer int8 model "
            "(export with --quant int8, or --target tflite-micro)"
        )
    if m.num_subgraphs > 1:
        raise EdgekdError(f"{m.source}: the model has {m.num_subgraphs} subgraphs (control flow); the C backend "
                          "runs single-graph models; use the TFLite Micro firmware (--target tflite-micro --firmware)")  # fmt: skip
    bad = [op for op in m.operators if op.name not in EMITTERS]
    if bad:
        names = sorted({op.name for op in bad})
        raise UnsupportedOpError(
            f"{m.source}: op {', '.join(names)} (operator {bad[0].index}) is not supported by edgekd's C backend "
            f"(supported: {', '.join(supported_ops())}); use the TFLite Micro firmware instead: "
            "edgekd export ... --target tflite-micro --firmware"
        )
    if len(m.inputs) != 1 or len(m.outputs) != 1:
        raise EdgekdError(
            f"{m.source}: the C backend needs one input and one output (has {len(m.inputs)} and {len(m.outputs)})"
        )
    for t in m.activations:
        if t.nbytes and t.dtype != "int8":
            raise EdgekdError(
                f"{m.source}: tensor {t.name!r} is {t.dtype}; the C backend runs int8 activations only"
            )


def model_header(source: str, in_bytes: int, out_bytes: int, arena: int, out_scale: float, out_zp: int,
                 prefix: str = "edgekd", *, in_scale: float = 0.0, in_zp: int = 0,
                 in_unsigned: bool = False) -> str:  # fmt: skip
    """``<prefix>_model.h``: sizes, the input and output quantization and the three functions the
    benchmark firmware calls (``ee_main.c`` decodes the host's input encoding and dequantizes with them).
    The input and output tensors are 8-bit: one element per byte; ``in_unsigned`` a uint8 input."""
    P = prefix.upper()
    return f"""/* Generated by edgekd from {source}: do not edit. */
#ifndef {P}_MODEL_H_
#define {P}_MODEL_H_

#include <stdint.h>

#define {P}_INPUT_SIZE {in_bytes}
#define {P}_INPUT_ELEMENTS {in_bytes}
#define {P}_INPUT_SCALE {float(in_scale or 1.0)!r}f
#define {P}_INPUT_ZERO_POINT {int(in_zp)}
#define {P}_INPUT_UNSIGNED {int(bool(in_unsigned))}
#define {P}_OUTPUT_SIZE {out_bytes}
#define {P}_ARENA_SIZE {arena}
#define {P}_OUTPUT_SCALE {float(out_scale)!r}f
#define {P}_OUTPUT_ZERO_POINT {int(out_zp)}

#ifdef __cplusplus
extern "C" {{
#endif
int8_t *{prefix}_input(void);
const int8_t *{prefix}_output(void);
void {prefix}_invoke(void);
#ifdef __cplusplus
}}
#endif

#endif
"""


class ArenaPlan(NamedTuple):
    """The C model's arena: operator order, tensor and scratch offsets, bytes, plan name, TFLM's head."""

    order: list[int]
    offsets: dict[int, int]  # tensor -> arena offset
    arena: int
    method: str
    greedy_head: int  # TFLite Micro's greedy plan of the model (its reference kernels' scratch)
    scratch_at: dict[int, int]  # operator -> arena offset of its kernel scratch


def plan_arena(
    m: TFLiteModel,
    optimize: bool = True,
    scratch: dict[int, int] | None = None,
    alias: dict[int, int] | None = None,
) -> ArenaPlan:
    """The arena from edgekd's planner, with ``scratch`` (operator -> bytes its C kernel needs while it
    runs) planned as buffers alive during that operator only, and each ``alias`` output (written in
    place over input ``alias[out]``) sharing its input's buffer."""
    from edgekd.graph.planner import greedy_plan, optimized_plan
    from edgekd.graph.planner.lifetimes import alias_root

    need = scratch or {}

    def requests(_m: TFLiteModel, op: int, subgraph: int) -> list[int]:
        return [need[op]] if subgraph == 0 and op in need else []

    alias = alias or {}
    best = greedy_plan(m, requests=requests, alias=alias)
    name = "tflm-greedy"
    if optimize:
        opt = optimized_plan(m, requests=requests, alias=alias)
        if opt.head < best.head:
            best, name = opt, opt.method
    at = {b.op: b.offset for b in best.buffers if b.tensor < 0 and b.subgraph == 0}
    offsets = dict(best.offsets)
    offsets.update({t: offsets[alias_root(alias, t)] for t in alias})
    return ArenaPlan(list(best.order), offsets, best.head, name, greedy_plan(m).head, at)


def _dry_ctx(
    m: TFLiteModel,
    kernels: str,
    inplace: bool = True,
    lowmem: set[int] | None = None,
    patch: PatchPlan | None = None,
) -> _Ctx:
    ctx = _Ctx(m, defaultdict(int), kernels, defaultdict(int), inplace, lowmem, patch)
    for op in m.operators:
        _emit(ctx, op)
    return ctx


def _dry_run(
    m: TFLiteModel,
    kernels: str,
    inplace: bool = True,
    lowmem: set[int] | None = None,
    patch: PatchPlan | None = None,
) -> tuple[dict[int, int], dict[int, int]]:
    """(operator -> scratch bytes its kernel needs, in-place output -> its input): a dry run of the
    emitters, arena offsets unknown; ``lowmem``: as :class:`_Ctx`; with ``patch``, as the planner sees
    it (:func:`_patch_requests`)."""
    ctx = _dry_ctx(m, kernels, inplace, lowmem, patch)
    if patch is None:
        return ctx.op_scratch, ctx.aliases
    return _patch_requests(patch, ctx.op_scratch, ctx.aliases)


def _patch_layout(patch: PatchPlan) -> tuple[int, int, int]:
    """(offset of band buffer 0, of band buffer 1, total bytes) of ``patch``'s scratch: the largest
    kernel scratch of its layers first, then the two ping-pong band buffers, 16-byte aligned."""
    from edgekd.graph.planner import align_up

    kernel = align_up(patch.kernel_scratch)
    a, b = (align_up(n) for n in patch.buffer_bytes)
    return kernel, kernel + a, kernel + a + b


def _patch_requests(
    patch: PatchPlan, scratch: dict[int, int], alias: dict[int, int]
) -> tuple[dict[int, int], dict[int, int]]:
    """The planner's view of a patch-based prefix: one scratch buffer (kernel scratch + band buffers)
    at its last layer; the prefix's intermediate tensors folded into its input as views (no bytes; the
    input lives until the last layer); so the arena holds the prefix input, its output and the patch
    scratch at once, as the band loop needs, and nothing else while the prefix runs."""
    need = {o: n for o, n in scratch.items() if o not in patch.ops}
    patch.kernel_scratch = max((scratch.get(o, 0) for o in patch.ops), default=0)
    need[patch.last_op] = _patch_layout(patch)[2]
    merged = {t: a for t, a in alias.items() if t not in patch.intermediates and t != patch.output}
    for la in patch.layers[:-1]:
        merged[la.out] = View(la.src)
    return need, merged


def choose_lowmem(m: TFLiteModel, kernels: str, inplace: bool = True, optimize: bool = True) -> set[int]:
    """The operators that take their slower memory-saving variant (a convolution in place or with two
    int8 im2col rows of scratch): from all of them, each dropped in turn unless the arena without it is
    larger by at least LOWMEM_MIN_GAIN; so the instructions go up only where the arena comes down."""
    chosen = set(_dry_ctx(m, kernels, inplace).lowmem_ops)

    def arena(ops: set[int]) -> int:
        return plan_arena(m, optimize, *_dry_run(m, kernels, inplace, ops)).arena

    current = arena(chosen) if chosen else 0
    for op in sorted(chosen):
        trial = chosen - {op}
        a = arena(trial)
        if a - current < a * LOWMEM_MIN_GAIN:
            chosen, current = trial, a
    return chosen


def _scratch_sizes(m: TFLiteModel, kernels: str, inplace: bool = True) -> dict[int, int]:
    """Operator -> scratch bytes its kernel needs."""
    return _dry_run(m, kernels, inplace)[0]


def _prefix_chain(ctx: _Ctx) -> list[Layer]:
    """The convolutions a patch-based prefix may hold: from the model input, a chain of CONV_2D and
    DEPTHWISE_CONV_2D (PADs fused into them between), batch 1, each output read by the next one only
    and not a model output."""
    m = ctx.m
    if OFFLINE_METADATA in m.metadata or len(m.inputs) != 1:
        return []
    readers = _readers(m)
    layers: list[Layer] = []
    t = m.inputs[0]
    while len(readers[t]) == 1 and ctx.uses[t] == 1:
        op = readers[t][0]
        if op.opcode in ("PAD", "PADV2") and op.outputs[0] in ctx.fused_pads:
            t = op.outputs[0]
            continue
        if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D") or op.inputs[0] != t or len(op.outputs) != 1:
            break
        out = ctx.t(op.outputs[0])
        if out.index in m.outputs or len(out.shape) != 4 or out.shape[0] != 1:
            break
        g = _geometry(ctx, op, ctx.options(op))
        depth = 1 if op.opcode == "DEPTHWISE_CONV_2D" else g.ic
        layers.append(Layer(op.index, g.src, out.index, g.ih, g.oh, g.fh, g.sh, g.dh, g.ph, g.iw * g.ic,
                            g.ow * g.oc, g.ow * g.oc * g.fh * g.fw * depth))  # fmt: skip
        t = out.index
    return layers


def _prefix_ops(m: TFLiteModel, layers: list[Layer]) -> tuple[int, ...]:
    """The operators from the first layer's input to the last layer's output (fused PADs too)."""
    producer = {t: o for o in m.operators for t in o.outputs}
    ops: list[int] = []
    t = layers[-1].out
    while t != layers[0].src and t in producer:
        ops.append(producer[t].index)
        t = producer[t].inputs[0]
    return tuple(reversed(ops))


def model_macs(m: TFLiteModel) -> int:
    """Multiply-accumulates of the model's convolutions and fully connected layers."""
    total = 0
    for op in m.operators:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            out, flt = m.tensors[op.outputs[0]], m.tensors[op.inputs[1]]
            per = (
                int(np.prod(flt.shape[1:]))
                if op.opcode != "DEPTHWISE_CONV_2D"
                else int(np.prod(flt.shape[1:3]))
            )
            total += int(np.prod(out.shape)) * per
    return total


def choose_patches(
    m: TFLiteModel,
    kernels: str,
    inplace: bool = True,
    optimize: bool = True,
    lowmem: set[int] | None = None,
    bands: tuple[int, ...] = PATCH_BANDS,
) -> PatchPlan | None:
    """The patch-based prefix with the smallest arena (of every chain prefix of two layers or more from
    the model input and every band count in ``bands``), its recomputed MACs at most PATCH_MAX_OVERHEAD
    of the model's; among arenas within 1/64 of the smallest, the least recomputation. None unless it
    lowers the arena by at least LOWMEM_MIN_GAIN."""
    if not inplace:
        return None
    ctx = _dry_ctx(m, kernels, inplace, lowmem)
    chain = _prefix_chain(ctx)
    base = plan_arena(m, optimize, ctx.op_scratch, ctx.aliases).arena
    budget = PATCH_MAX_OVERHEAD * model_macs(m)
    found: list[tuple[int, int, PatchPlan]] = []
    for end in range(2, len(chain) + 1):
        layers = chain[:end]
        out_bytes = layers[-1].oh * layers[-1].out_row_bytes
        if out_bytes >= max(la.oh * la.out_row_bytes for la in layers[:-1]):
            continue  # the peak has not fallen by the prefix's end: bands save nothing
        ops = _prefix_ops(m, layers)
        for n in bands:
            patch = plan_bands(layers, ops, n)
            if patch.n != n or patch.extra_macs > budget:
                continue
            plan = plan_arena(m, optimize, *_dry_run(m, kernels, inplace, lowmem, patch))
            pos = [plan.order.index(o) for o in ops]
            if pos != list(range(pos[0], pos[0] + len(ops))):
                continue  # the band loop needs the prefix's operators in one run
            found.append((plan.arena, patch.extra_macs, patch))
    if not found:
        return None
    best = min(a for a, _, _ in found)
    if base - best < base * LOWMEM_MIN_GAIN:
        return None
    return min((x for x in found if x[0] <= best * (1 + 1 / 64)), key=lambda x: (x[1], x[0]))[2]


_MALFORMED = (ArithmeticError, AttributeError, IndexError, KeyError, TypeError, ValueError)


def _emit(ctx: _Ctx, op: Operator) -> str:
    """One operator's C call; parameters a validated model should not have become one line naming it."""
    try:
        call = EMITTERS[op.name](ctx, op, ctx.options(op))
        if not ctx.layers or ctx.layers[-1]["op"] != op.index:  # ops with one kernel: the call names it
            ctx.kernel(op, call.split("(", 1)[0])
        return call
    except _MALFORMED as e:
        why = " ".join(str(e).split())[:120] or type(e).__name__
        raise EdgekdError(
            f"{ctx.m.source}: operator {op.index} ({op.opcode}) has parameters the C backend cannot use "
            f"({type(e).__name__}: {why}); the file is corrupt or hand-edited, re-export the model"
        ) from None


def generate_c(
    model: str | os.PathLike | bytes | TFLiteModel,
    *,
    optimize_plan: bool = True,
    prefix: str = "edgekd",
    kernels: str = DEFAULT_KERNELS,
    inplace: bool = True,
    lowmem: bool = True,
    patches: int | str | tuple[int, int] | None = "auto",
) -> CModel:
    """C sources for ``model`` (see module doc) with ``kernels`` (one of KERNELS); ``inplace``: layers
    proven safe (fast depthwise / pointwise / other stride-1 convolutions, elementwise ADD whose input
    dies there) write their output over their input, and a PAD read by one convolution is fused into it
    (no copy); ``lowmem``: convolutions may take a slower variant with less scratch (or in place) where
    that lowers the arena (:func:`choose_lowmem`); ``patches``: ``"auto"`` runs the model's first
    layers in row bands where that lowers the arena (:func:`choose_patches`), an int tries only that
    many bands, ``None`` or 0 never, ``(layers, bands)`` that prefix (tests). Raises EdgekdError for float models and unsupported ops."""
    if kernels not in KERNELS:
        raise EdgekdError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
    m = model if isinstance(model, TFLiteModel) else read_tflite(model)
    _check(m)
    chosen = choose_lowmem(m, kernels, inplace, optimize_plan) if lowmem else set()
    patch = None
    if isinstance(patches, tuple):  # (layers, bands): that prefix, whatever it saves (for tests)
        layers = _prefix_chain(_dry_ctx(m, kernels, inplace, chosen))[: patches[0]]
        if len(layers) != patches[0] or not inplace:
            raise EdgekdError(f"{m.source}: no patch-based prefix of {patches[0]} layers")
        patch = plan_bands(layers, _prefix_ops(m, layers), patches[1])
    elif patches:
        tried = PATCH_BANDS if patches == "auto" else (int(patches),)
        patch = choose_patches(m, kernels, inplace, optimize_plan, chosen, tried)
    order, offsets, arena, method, greedy_head, scratch_at = plan_arena(
        m, optimize_plan, *_dry_run(m, kernels, inplace, chosen, patch)
    )
    ctx = _Ctx(m, offsets, kernels, scratch_at, inplace, chosen, patch)
    calls = _calls(ctx, order)
    ti, to = m.tensors[m.inputs[0]], m.tensors[m.outputs[0]]
    if ti.index not in offsets or to.index not in offsets:
        raise EdgekdError(f"{m.source}: the model input or output is a constant tensor; re-export the model")
    io = {
        "input": {"offset": offsets[ti.index], "bytes": ti.nbytes, "shape": list(ti.shape), "scale": _scale(ti), "zero_point": _zp(ti)},
        "output": {"offset": offsets[to.index], "bytes": to.nbytes, "shape": list(to.shape), "scale": _scale(to), "zero_point": _zp(to)},
    }  # fmt: skip
    header = model_header(Path(m.source).name, ti.nbytes, to.nbytes, arena, _scale(to), _zp(to), prefix,
                          in_scale=_scale(ti), in_zp=_zp(ti), in_unsigned=ti.dtype == "uint8")  # fmt: skip
    placement = [{"op": k, "offset": scratch_at[k], "bytes": n} for k, n in sorted(ctx.op_scratch.items())
                 if patch is None or k not in patch.ops]  # fmt: skip
    patch_info = None
    if patch is not None:
        patch_info = {**patch.summary(model_macs(m)), "scratch_offset": scratch_at[patch.last_op],
                      "scratch_bytes": _patch_layout(patch)[2]}  # fmt: skip
        placement.append(
            {"op": patch.last_op, "offset": scratch_at[patch.last_op], "bytes": patch_info["scratch_bytes"]}
        )
    fast_include = '#include "edgekd_kernels_fast.h"\n' if ctx.fast else ""
    body = f"""/* Generated by edgekd from {Path(m.source).name}: do not edit.
 * Operators: {len(m.operators)}; arena {arena} bytes (plan: {method}; TFLite Micro's greedy plan: {greedy_head}).
 * Kernels: {_kernels_note(kernels, placement)}{_patch_note(patch_info)} */
#include "{prefix}_model.h"

#include "edgekd_kernels.h"
{fast_include}
static int8_t ek_arena[{max(arena, 16)}] __attribute__((aligned(16)));

{"".join(ctx.decls)}
int8_t *{prefix}_input(void) {{ return ek_arena + {offsets[ti.index]}; }}
const int8_t *{prefix}_output(void) {{ return ek_arena + {offsets[to.index]}; }}

void {prefix}_invoke(void) {{
{chr(10).join(calls)}
}}
"""
    files = {f"{prefix}_model.h": header, f"{prefix}_model.c": body}
    for f in RUNTIME_FILES + (FAST_RUNTIME_FILES if ctx.fast else ()):
        files[f] = (RUNTIME_DIR / f).read_text()
    return CModel(m.source, files, arena, method, greedy_head, io["input"], io["output"],
                  m.op_names(), ctx.weight_bytes, order, kernels, ctx.layers, 0, placement, patch_info)  # fmt: skip


def _calls(ctx: _Ctx, order: list[int]) -> list[str]:
    """Each operator's call in ``order``; a patch-based prefix as one loop over its row bands: its
    first layer reads its band's rows of the input, the others the band buffers, the last writes its
    band's rows of the full output."""
    m, patch = ctx.m, ctx.patch
    calls = []
    for i in order:
        if patch is None or i not in patch.ops:
            calls.append(f"    /* {i}: {m.operators[i].opcode} */\n    " + _emit(ctx, m.operators[i]))
            continue
        if i != patch.ops[0]:
            continue
        first, last = patch.layers[0], patch.layers[-1]
        n = patch.n
        k0, kn = first.op, last.op
        ctx.array(f"pin{k0}", "int32_t", [b.in_row0 * first.in_row_bytes for b in patch.bands[k0]])
        ctx.array(f"pout{kn}", "int32_t", [b.out_row0 * last.out_row_bytes for b in patch.bands[kn]])
        base = ctx.scratch_at[patch.last_op]
        buf = _patch_layout(patch)
        ctx.ptr_expr[first.src] = f"(ek_arena + {ctx.offsets[first.src]} + pin{k0}[ek_band])"
        ctx.ptr_expr[last.out] = f"(ek_arena + {ctx.offsets[last.out]} + pout{kn}[ek_band])"
        for k, la in enumerate(patch.layers[:-1]):
            ctx.ptr_expr[la.out] = f"(ek_arena + {base + buf[patch.buffer_of(k)]})"
        ctx.patch_scratch = f"(ek_arena + {base})"
        body = [
            f"        /* {o}: {m.operators[o].opcode} */\n        " + _emit(ctx, m.operators[o])
            for o in patch.ops
        ]
        ctx.ptr_expr.clear()  # after the loop the prefix output is the whole tensor again
        calls.append(
            f"    /* operators {patch.ops[0]}..{patch.ops[-1]}: patch-based (MCUNetV2), {n} row bands of tensor "
            f"{last.out}; band buffers at {base} */\n"
            f"    for (int ek_band = 0; ek_band < {n}; ++ek_band) {{\n" + "\n".join(body) + "\n    }"
        )
    return calls


def _patch_note(info: dict[str, Any] | None) -> str:
    if info is None:
        return ""
    return (
        f"\n * Patch-based prefix (MCUNetV2): operators {info['ops'][0]}..{info['ops'][-1]} in {info['bands']} "
        f"row bands, {info['scratch_bytes']} bytes of band buffers and kernel scratch instead of their "
        f"whole intermediate tensors; {info['extra_macs']} MACs recomputed at band edges "
        f"({100 * info['recompute_overhead_model']:.1f}% of the model's)."
    )


def _kernels_note(kernels: str, placement: list[dict[str, int]]) -> str:
    if kernels == "portable":
        return "portable (edgekd_kernels.c: TFLite Micro reference numerics, plain C)."
    most = max((p["bytes"] for p in placement), default=0)
    return (
        f"fast (edgekd_kernels_fast.c: Cortex-M4 SIMD with a portable fallback, bit-exact with the "
        f"portable kernels; scratch up to {most} bytes a layer, in the arena during that layer only); "
        f"other ops portable (edgekd_kernels.c)."
    )
