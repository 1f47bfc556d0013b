"""Quantization-aware training (QAT): the student runs with TFLite's int8 arithmetic simulated, so
it can learn (from the float teacher's soft targets: quantization-aware distillation, Mishra & Marr
2018 "Apprentice"; Kim et al. 2019 "QKD") around the rounding it will meet on the device.

What is simulated, as the TFLite converter and TFLite Micro do it:

* **Weights** of every ``Conv1d`` / ``Conv2d`` / ``Linear``: symmetric per output channel,
  ``w_q = clamp(round(w / s_c), -127, 127) * s_c`` with ``s_c = max|w_c| / 127``. Per-channel
  symmetric rounding commutes with batch norm's per-channel factor, so quantizing the unfolded weight
  equals quantizing the folded one once batch norm is frozen.
* **Activations** at the points where TFLite keeps an int8 tensor: the output of each conv / linear /
  batch norm / activation / pooling module, except where the converter fuses it into the next op
  (conv -> batch norm -> ReLU / ReLU6 is one int8 tensor, after the ReLU). Asymmetric int8,
  ``scale = (hi - lo) / 255``, ``zero_point = round(-128 - lo / scale)`` (0 always representable:
  :func:`edgekd.graph.requantize.qparams_for_range`), gradients by the straight-through estimator.
  ``[lo, hi]`` follows an exponential moving average of each batch's min / max while the ranges are
  observed, then stays fixed (and batch norm switches to its running statistics) for the rest of the
  stage, so the last epochs train the network exactly as it will be quantized.

The learned ranges are saved in the student's checkpoint (``meta.qat``) and written into the int8
model by the export (:mod:`edgekd.export.ranges`, method ``learned``).
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.errors import EdgekdError

QAT_FORMAT = "edgekd-qat/1"
EMA = 0.01  # weight of each batch's min / max in the moving average (PyTorch's averaging constant)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
FUSED_ACTIVATIONS = (nn.ReLU, nn.ReLU6)  # fused into the producing op by the converter
OWN_RANGE = (  # ops whose int8 output gets its own scale
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU,
    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Upsample,
)  # fmt: skip
INPUT = ""  # the point name of the model input


def activation_qparams(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """TFLite's asymmetric int8 ``(scale, zero_point)`` for ``[lo, hi]`` (0 always inside)."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
    zero = torch.clamp(torch.round(-128.0 - lo / scale), -128, 127).to(torch.int32)
    return scale.float(), zero


def fake_quant_activation(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``x`` quantized to int8 for the range ``[lo, hi]`` and back (straight-through gradient)."""
    scale, zero = activation_qparams(lo, hi)
    return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, -128, 127).to(x.dtype)  # AMP-safe


def fake_quant_weight(w: Tensor) -> Tensor:
    """``w`` quantized symmetric per output channel (axis 0, [-127, 127], TFLite's rule) and back."""
    absmax = w.detach().abs().reshape(w.shape[0], -1).amax(1)
    scale = torch.clamp(absmax / 127.0, min=1e-12).float()
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -127, 127).to(w.dtype)


def _leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()):
            yield name, m


def _fuses(producer: nn.Module, consumer: nn.Module) -> bool:
    """Whether the converter folds ``producer``'s output into ``consumer`` (no int8 tensor between)."""
    if isinstance(producer, WEIGHTED) and isinstance(consumer, NORMS):
        return True
    return isinstance(producer, WEIGHTED + NORMS) and isinstance(consumer, FUSED_ACTIVATIONS)


def quant_points(model: nn.Module, sample_x: Tensor) -> list[str]:
    """Module paths whose output TFLite keeps as an int8 tensor, found by one traced forward pass on
    ``sample_x`` (which leaf module reads which one's output). The model's output is not one: the
    export keeps its calibrated range, and clipping the logits would bias the distillation loss."""
    kinds = WEIGHTED + NORMS + FUSED_ACTIVATIONS + OWN_RANGE
    calls: list[tuple[str, nn.Module, list[int], int]] = []
    keep: list[Tensor] = []  # hold every traced tensor so that no id is reused during the pass

    def hook(name: str, m: nn.Module, args: tuple, out: Any) -> None:
        if isinstance(out, Tensor):
            ins = [a for a in args if isinstance(a, Tensor)]
            keep.extend([*ins, out])
            calls.append((name, m, [id(a) for a in ins], id(out)))

    handles = [m.register_forward_hook(lambda m, a, o, n=n: hook(n, m, a, o)) for n, m in _leaves(model)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            result = model(sample_x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    readers: dict[int, list[nn.Module]] = {}
    for _, m, ins, _ in calls:
        for i in ins:
            readers.setdefault(i, []).append(m)
    final = {id(result)} if isinstance(result, Tensor) else set()
    if calls and isinstance(result, Tensor) and calls[-1][3] not in readers:
        last = next(t for t in reversed(keep) if id(t) == calls[-1][3])
        if last.numel() == result.numel():  # the last module's output, only reshaped into the result
            final.add(calls[-1][3])
    points: list[str] = []
    for name, m, _, out in calls:
        if not isinstance(m, kinds) or name in points or out in final:
            continue  # the model output keeps the calibration's range (its consumer is the host)
        after = readers.get(out, [])
        if not (len(after) == 1 and _fuses(m, after[0])):
            points.append(name)
    return points


class FakeQuantizer(nn.Module):
    """The int8 simulation of one student: its quantization points and their ranges (buffers, so the
    training checkpoint keeps them). :meth:`attach` turns it on, :meth:`detach` off."""

    def __init__(self, student: nn.Module, sample_x: Tensor) -> None:
        super().__init__()
        self.points = [INPUT, *quant_points(student, sample_x)]
        n = len(self.points)
        self.register_buffer("lo", torch.zeros(n))
        self.register_buffer("hi", torch.zeros(n))
        self.register_buffer("seen", torch.zeros(n, dtype=torch.bool))
        self.observing = True
        object.__setattr__(self, "_student", None)  # not a submodule: the checkpoint keeps only the ranges
        self._handles: list[Any] = []
        self._weighted: list[nn.Module] = []

    # --- on / off -------------------------------------------------------------------------------------
    def attach(self, student: nn.Module) -> None:
        """Simulate int8 in every forward pass of ``student`` (weights and activations)."""
        if self._student is not None:
            return
        object.__setattr__(self, "_student", student)
        self._handles.append(student.register_forward_pre_hook(self._quantize_input))
        for k, path in enumerate(self.points[1:], start=1):
            m = student.get_submodule(path)
            self._handles.append(m.register_forward_hook(lambda m, a, o, k=k: self._observe(k, o)))
        for _, m in _leaves(student):
            if isinstance(m, WEIGHTED) and "forward" not in vars(m):
                m.forward = types.MethodType(_quantized_forward, m)
                self._weighted.append(m)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        for m in self._weighted:
            vars(m).pop("forward", None)
        self._handles, self._weighted = [], []
        object.__setattr__(self, "_student", None)

    def freeze(self, student: nn.Module) -> None:
        """Stop observing ranges and run batch norm on its running statistics (the deployed network)."""
        self.observing = False
        for m in student.modules():
            if isinstance(m, NORMS):
                m.eval()

    # --- hooks ----------------------------------------------------------------------------------------
    def _quantize_input(self, module: nn.Module, args: tuple) -> tuple | None:
        if not args or not isinstance(args[0], Tensor):
            return None
        return (self._observe(0, args[0]), *args[1:])

    def _observe(self, k: int, out: Any) -> Any:
        if not isinstance(out, Tensor) or not out.is_floating_point():
            return out
        if self.observing and self._student is not None and self._student.training:
            with torch.no_grad():
                lo, hi = out.detach().min().float(), out.detach().max().float()
                if bool(self.seen[k]):
                    self.lo[k] += EMA * (lo - self.lo[k])
                    self.hi[k] += EMA * (hi - self.hi[k])
                else:
                    self.lo[k], self.hi[k], self.seen[k] = lo, hi, True
        if not bool(self.seen[k]):
            return out  # never observed (evaluation before the first training step)
        return fake_quant_activation(out, self.lo[k], self.hi[k])

    def set_ranges(self, ranges: dict[str, tuple[float, float]]) -> None:
        """Fix the points' ranges (a checkpoint's ``meta.qat``, :func:`read_qat_record`)."""
        for k, p in enumerate(self.points):
            if p in ranges:
                self.lo[k], self.hi[k] = ranges[p]
                self.seen[k] = True

    # --- the record -----------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """What the export needs: each point's module path and learned ``[lo, hi]``."""
        pts = [
            {"module": p, "range": [float(self.lo[k]), float(self.hi[k])]}
            for k, p in enumerate(self.points)
            if bool(self.seen[k])
        ]
        return {"format": QAT_FORMAT, "weights": "int8 symmetric per output channel", "points": pts}


def _quantized_forward(self: nn.Module, x: Tensor) -> Tensor:
    """``forward`` of a conv / linear module with its weight fake-quantized (bound per instance)."""
    w = fake_quant_weight(self.weight)
    if isinstance(self, nn.Linear):
        return nn.functional.linear(x, w, self.bias)
    return self._conv_forward(x, w, self.bias)


def range_epochs(epochs: int, setting: int) -> int:
    """Epochs of a QAT stage that observe ranges (``train.qat_range_epochs``; 0: the first half)."""
    return max(1, min(epochs, setting if setting > 0 else math.ceil(epochs / 2)))


def read_qat_record(record: Any, source: str) -> dict[str, tuple[float, float]] | None:
    """``{module path: (lo, hi)}`` from a checkpoint's ``meta.qat`` (None: not a QAT student). The
    checkpoint is untrusted: anything malformed is one error naming the file and key."""
    if record is None:
        return None
    where = f"{source}: key 'meta.qat'"
    if not isinstance(record, dict) or record.get("format") != QAT_FORMAT:
        raise EdgekdError(f"{where} is not an {QAT_FORMAT} record; re-run the QAT stage or drop the key")
    points = record.get("points")
    if not isinstance(points, list) or len(points) > 100_000:
        raise EdgekdError(f"{where}.points must be a list of {{module, range}}")
    out: dict[str, tuple[float, float]] = {}
    for k, p in enumerate(points):
        ok = isinstance(p, dict) and isinstance(p.get("module"), str) and len(p["module"]) < 512
        rng = p.get("range") if ok else None
        ok = ok and isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)
        if not ok or not all(math.isfinite(float(v)) for v in rng) or float(rng[0]) > float(rng[1]):
            raise EdgekdError(
                f"{where}.points[{k}] must be {{module: str, range: [lo, hi]}} with finite lo <= hi"
            )
        out[p["module"]] = (float(rng[0]), float(rng[1]))
    return out
