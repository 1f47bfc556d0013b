"""Training-time augmentation from the recipe (``data.augment``), reproducible view by view.

Every random draw is a pure function of ``(seed, view, example index, draw number)`` through a
counter-based generator (SplitMix64), never of a stateful RNG. So view ``v`` of example ``i`` can be
regenerated at any time: resume is bit-identical, and a teacher-output cache can store the teacher's
outputs for ``K`` views of every example and hand the student the matching output when the student later
draws that view (Beyer et al., CVPR 2022, consistent teaching; Shen & Xing, ECCV 2022, FKD).

```yaml
data:
  augment:
    - {name: crop, params: {padding: 2}}
    - {name: hflip}                      # only for data sets whose flips are valid (not digits)
    - {name: erase, params: {size: 0.25, p: 0.5}}
    - {name: mixup, params: {alpha: 0.2}}
```

Images are ``(N, C, H, W)``; time series ``(N, ...)`` with time on axis 1. Mixup and cutmix pair example
``i`` with a partner drawn from the whole training set (also a function of the view), and return mixed
label distributions ``(N, classes)`` for the cross-entropy term.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.errors import EdgekdError

# Data sets whose horizontal flips are label-preserving (a mirrored digit is not a digit).
FLIP_VALID = frozenset({"fashion-mnist", "image-folder"})
DRAWS_PER_TRANSFORM = 8  # draw numbers reserved for each transform of the list
VIEW_PICK_DRAW = 1 << 20  # the draw that picks one of K cached views per (epoch, example)

_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of uint64 counters."""
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, view: np.ndarray, index: np.ndarray, draw: int, width: int = 1) -> np.ndarray:
    """Uniforms in [0, 1) of shape ``(N, width)``, a pure function of (seed, view, index, draw, column)."""
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed & (2**64 - 1)) * _M1 + np.uint64(draw) * _M2)
        z = _mix(base ^ (view.astype(np.uint64) * _M3))
        z = _mix(z ^ (index.astype(np.uint64) * _M1))[:, None]
        z = _mix(z + np.arange(width, dtype=np.uint64)[None] * _M1)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class Draws:
    """The draws of one transform for one batch: ``u(k)`` gives the k-th uniform per example."""

    seed: int
    view: np.ndarray
    index: np.ndarray
    offset: int

    def u(self, k: int = 0, width: int = 1) -> Tensor:
        out = uniform(self.seed, self.view, self.index, self.offset + k, width)
        return torch.from_numpy(out if width > 1 else out[:, 0])


@dataclass
class Batch:
    x: Tensor
    y: Tensor  # int64 labels (N,), or mixed label distributions (N, classes) after mixup / cutmix
    index: np.ndarray


@dataclass(frozen=True)
class Transform:
    name: str
    fn: Callable[..., Batch]
    params: dict[str, tuple[type, Any]]  # name -> (type, default)
    images_only: bool = True
    classification_only: bool = False
    needs_flip_valid: bool = False
    summary: str = ""


TRANSFORMS: dict[str, Transform] = {}


def register(name: str, params: dict[str, tuple[type, Any]], **flags: Any) -> Callable:
    def deco(fn: Callable[..., Batch]) -> Callable[..., Batch]:
        doc = (fn.__doc__ or "").strip().splitlines()
        TRANSFORMS[name] = Transform(name, fn, params, summary=doc[0] if doc else "", **flags)
        return fn

    return deco


def _shift(x: Tensor, dy: Tensor, dx: Tensor, pad: int, fill: str) -> Tensor:
    """Shift each image by integer offsets ``(dy, dx)`` in ``[-pad, pad]`` (zero fill or reflect)."""
    n, c, h, w = x.shape
    mode = "reflect" if fill == "reflect" else "constant"
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    rows = (dy + pad)[:, None] + torch.arange(h)[None]
    cols = (dx + pad)[:, None] + torch.arange(w)[None]
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def _offsets(d: Draws, k: int, pad: int) -> Tensor:
    return (d.u(k) * (2 * pad + 1)).long().clamp(max=2 * pad) - pad


@register("translate", {"max_shift": (int, 2)})
def translate(b: Batch, d: Draws, ctx: dict, max_shift: int) -> Batch:
    """Random integer translation in ``[-max_shift, max_shift]`` pixels, zero fill (Hinton's jitter)."""
    b.x = _shift(b.x, _offsets(d, 0, max_shift), _offsets(d, 1, max_shift), max_shift, "zero")
    return b


@register("crop", {"padding": (int, 4), "fill": (str, "zero")})
def crop(b: Batch, d: Draws, ctx: dict, padding: int, fill: str) -> Batch:
    """Random crop of the image padded by ``padding`` on every side (``fill: zero | reflect``)."""
    b.x = _shift(b.x, _offsets(d, 0, padding), _offsets(d, 1, padding), padding, fill)
    return b


@register("hflip", {"p": (float, 0.5)}, needs_flip_valid=True)
def hflip(b: Batch, d: Draws, ctx: dict, p: float) -> Batch:
    """Horizontal flip with probability ``p`` (only for data sets whose flips keep the label)."""
    flip = d.u(0) < p
    b.x = torch.where(flip.view(-1, 1, 1, 1), b.x.flip(3), b.x)
    return b


@register("erase", {"size": (float, 0.25), "p": (float, 0.5)})
def erase(b: Batch, d: Draws, ctx: dict, size: float, p: float) -> Batch:
    """Cutout / random erasing: with probability ``p`` zero a square of side ``size`` x the image side."""
    n, _, h, w = b.x.shape
    sh, sw = max(1, round(size * h)), max(1, round(size * w))
    cy, cx = (d.u(0) * h).long(), (d.u(1) * w).long()
    on = d.u(2) < p
    ys, xs = torch.arange(h)[None], torch.arange(w)[None]
    in_y = (ys >= (cy - sh // 2)[:, None]) & (ys < (cy - sh // 2 + sh)[:, None])
    in_x = (xs >= (cx - sw // 2)[:, None]) & (xs < (cx - sw // 2 + sw)[:, None])
    mask = (in_y[:, :, None] & in_x[:, None, :] & on.view(n, 1, 1))[:, None]
    b.x = b.x.masked_fill(mask, 0.0)
    return b


def _beta(d: Draws, k: int, alpha: float) -> Tensor:
    """``lam ~ Beta(alpha, alpha)`` by the inverse CDF of a counter-based uniform."""
    from scipy.special import betaincinv

    return torch.from_numpy(betaincinv(alpha, alpha, d.u(k).numpy())).float()


def _partner(b: Batch, d: Draws, ctx: dict) -> tuple[np.ndarray, Tensor, Tensor]:
    """A partner example per row, drawn from the whole training set: its index, input and label."""
    j = np.minimum((d.u(1).numpy() * ctx["n_total"]).astype(np.int64), ctx["n_total"] - 1)
    return j, ctx["x_all"][torch.from_numpy(j)].to(b.x.dtype), ctx["y_all"][torch.from_numpy(j)]


def _soft(y: Tensor, classes: int) -> Tensor:
    return y if y.dim() == 2 else F.one_hot(y.long(), classes).float()


@register("mixup", {"alpha": (float, 0.2)}, images_only=False, classification_only=True)
def mixup(b: Batch, d: Draws, ctx: dict, alpha: float) -> Batch:
    """Mixup (Zhang et al. 2018): ``x = lam x_i + (1 - lam) x_j``, labels mixed alike, ``lam ~ Beta(a, a)``."""
    lam = _beta(d, 0, alpha)
    _, xj, yj = _partner(b, d, ctx)
    shape = (-1,) + (1,) * (b.x.dim() - 1)
    b.x = lam.view(shape) * b.x + (1 - lam).view(shape) * xj
    k = ctx["num_classes"]
    b.y = lam[:, None] * _soft(b.y, k) + (1 - lam)[:, None] * _soft(yj, k)
    return b


@register("cutmix", {"alpha": (float, 1.0)}, classification_only=True)
def cutmix(b: Batch, d: Draws, ctx: dict, alpha: float) -> Batch:
    """CutMix (Yun et al. 2019): paste a box of a partner image; labels mixed by the pasted area."""
    n, _, h, w = b.x.shape
    lam = _beta(d, 0, alpha)
    _, xj, yj = _partner(b, d, ctx)
    side = (1 - lam).sqrt()
    bh, bw = (side * h).round().long(), (side * w).round().long()
    cy, cx = (d.u(2) * h).long(), (d.u(3) * w).long()
    y0, y1 = (cy - bh // 2).clamp(0, h), (cy - bh // 2 + bh).clamp(0, h)
    x0, x1 = (cx - bw // 2).clamp(0, w), (cx - bw // 2 + bw).clamp(0, w)
    ys, xs = torch.arange(h)[None], torch.arange(w)[None]
    in_y = (ys >= y0[:, None]) & (ys < y1[:, None])
    in_x = (xs >= x0[:, None]) & (xs < x1[:, None])
    box = (in_y[:, :, None] & in_x[:, None, :])[:, None]
    b.x = torch.where(box, xj, b.x)
    kept = 1 - ((y1 - y0) * (x1 - x0)).float() / (h * w)
    k = ctx["num_classes"]
    b.y = kept[:, None] * _soft(b.y, k) + (1 - kept)[:, None] * _soft(yj, k)
    return b


@register("noise", {"std": (float, 0.05)}, images_only=False)
def noise(b: Batch, d: Draws, ctx: dict, std: float) -> Batch:
    """Additive Gaussian noise of standard deviation ``std`` (Box-Muller over counter-based uniforms)."""
    width = int(np.prod(b.x.shape[1:]))
    u1, u2 = d.u(0, width).clamp(min=1e-12), d.u(1, width)
    z = (-2 * u1.log()).sqrt() * torch.cos(2 * torch.pi * u2)
    b.x = b.x + std * z.view(b.x.shape).to(b.x.dtype)
    return b


@register("scale", {"low": (float, 0.9), "high": (float, 1.1)}, images_only=False)
def scale(b: Batch, d: Draws, ctx: dict, low: float, high: float) -> Batch:
    """Multiply each example by a factor drawn uniformly from ``[low, high]``."""
    f = (low + (high - low) * d.u(0)).to(b.x.dtype)
    b.x = b.x * f.view((-1,) + (1,) * (b.x.dim() - 1))
    return b


@register("time-shift", {"max_shift": (int, 5)}, images_only=False)
def time_shift(b: Batch, d: Draws, ctx: dict, max_shift: int) -> Batch:
    """Shift each series along time (axis 1) by up to ``max_shift`` steps, repeating the edge value."""
    n, length = b.x.shape[0], b.x.shape[1]
    s = _offsets(d, 0, max_shift)
    src = (torch.arange(length)[None] - s[:, None]).clamp(0, length - 1)
    idx = src.view((n, length) + (1,) * (b.x.dim() - 2)).expand(b.x.shape)
    b.x = b.x.gather(1, idx)
    return b


@dataclass(frozen=True)
class AugmentSpec:
    name: str
    params: dict[str, Any]


class Augmentation:
    """The recipe's transforms in order; ``apply`` builds view ``view[i]`` of each example ``index[i]``."""

    def __init__(self, specs: list[AugmentSpec], seed: int) -> None:
        self.specs = specs
        self.seed = int(seed)

    @classmethod
    def translation(cls, max_shift: int, seed: int) -> Augmentation:
        """A random translation of up to ``max_shift`` pixels (``data.jitter``, Hinton's jitter)."""
        return cls([AugmentSpec("translate", {"max_shift": int(max_shift)})], seed)

    def __bool__(self) -> bool:
        return bool(self.specs)

    @property
    def mixes_labels(self) -> bool:
        return any(s.name in ("mixup", "cutmix") for s in self.specs)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "params": s.params} for s in self.specs]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.seed, self.describe()], sort_keys=True).encode()).hexdigest()

    def pick_views(self, epoch: int, index: np.ndarray, k_views: int) -> np.ndarray:
        """The view each example shows in ``epoch``: ``epoch`` itself (a fresh view every epoch) without a
        cache, else one of the ``k_views`` cached views, drawn per (epoch, example)."""
        if k_views <= 0:
            return np.full(len(index), epoch, dtype=np.int64)
        u = uniform(self.seed, np.full(len(index), epoch), index, VIEW_PICK_DRAW)[:, 0]
        return np.minimum((u * k_views).astype(np.int64), k_views - 1)

    def apply(self, x_all: Tensor, y_all: Tensor, index: np.ndarray, view: np.ndarray,
              num_classes: int) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Inputs and labels of view ``view[i]`` of examples ``index`` (a pure function of its arguments)."""
        idx = torch.from_numpy(np.asarray(index, dtype=np.int64))
        b = Batch(x_all[idx].clone(), y_all[idx], np.asarray(index))
        ctx = {"x_all": x_all, "y_all": y_all, "n_total": len(x_all), "num_classes": num_classes}
        for k, spec in enumerate(self.specs):
            t = TRANSFORMS[spec.name]
            draws = Draws(self.seed, np.asarray(view), b.index, k * DRAWS_PER_TRANSFORM)
            b = t.fn(b, draws, ctx, **spec.params)
        return b.x.contiguous(), b.y

    def batch(self, x_all: Tensor, y_all: Tensor, idx: Tensor, epoch: int, k_views: int,
              num_classes: int) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Inputs, labels and view numbers of the examples ``idx`` in ``epoch``: the view each example shows
        this epoch (a fresh one, or one of the ``k_views`` cached views)."""
        views = self.pick_views(epoch, idx.numpy(), k_views)
        xb, yb = self.apply(x_all, y_all, idx.numpy(), views, num_classes)
        return xb, yb, torch.from_numpy(views)


def _check_param(t: Transform, key: str, value: Any, where: str) -> Any:
    kind = t.params[key][0]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise EdgekdError(f"{where}.params.{key}={value!r}: must be an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise EdgekdError(f"{where}.params.{key}={value!r}: must be a number")
    if kind is str and not isinstance(value, str):
        raise EdgekdError(f"{where}.params.{key}={value!r}: must be a string")
    value = kind(value)
    ranges = {"max_shift": (0, 16), "padding": (0, 16), "p": (0.0, 1.0), "size": (0.0, 1.0),
              "alpha": (1e-3, 100.0), "std": (0.0, 10.0), "low": (0.0, 10.0), "high": (0.0, 10.0)}  # fmt: skip
    lo, hi = ranges.get(key, (None, None))
    if lo is not None and not lo <= value <= hi:
        raise EdgekdError(f"{where}.params.{key}={value}: must be between {lo} and {hi}")
    if key == "fill" and value not in ("zero", "reflect"):
        raise EdgekdError(f"{where}.params.fill={value!r}: must be zero or reflect")
    return value


def parse_augment(
    items: Any, dataset: str, task: str | None, where: str = "data.augment"
) -> list[AugmentSpec]:
    """Validate the recipe's ``data.augment`` list: known names, known and well-typed params, and
    transforms that fit the data (flips only where valid, mixing only for classification)."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise EdgekdError(f"{where}: must be a list of {{name, params}} entries")
    specs = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise EdgekdError(f"{at}: must be a transform name or {{name: ..., params: {{...}}}}")
        if set(item) - {"name", "params"}:
            raise EdgekdError(f"{at}: unknown key(s) {', '.join(sorted(set(item) - {'name', 'params'}))}")
        t = TRANSFORMS.get(item["name"])
        if t is None:
            raise EdgekdError(
                f"{at}.name={item['name']!r}: unknown transform; valid: {', '.join(sorted(TRANSFORMS))}"
            )
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise EdgekdError(f"{at}.params: must be a mapping")
        unknown = sorted(set(params) - set(t.params))
        if unknown:
            raise EdgekdError(
                f"{at}.params: unknown {', '.join(unknown)} for {t.name}; valid: {', '.join(t.params)}"
            )
        full = {k: _check_param(t, k, params.get(k, default), at) for k, (_, default) in t.params.items()}
        if t.needs_flip_valid and dataset not in FLIP_VALID:
            raise EdgekdError(f"{at}: {t.name} changes the meaning of {dataset!r} examples (a mirrored digit is "
                              f"not a digit); flips are valid for: {', '.join(sorted(FLIP_VALID))}")  # fmt: skip
        if t.classification_only and task not in (None, "classification"):
            raise EdgekdError(f"{at}: {t.name} mixes labels and needs a classification data set, not {task}")
        specs.append(AugmentSpec(t.name, full))
    return specs


def check_shapes(specs: list[AugmentSpec], input_shape: tuple[int, ...], where: str = "data.augment") -> None:
    """Image transforms need ``(C, H, W)`` inputs."""
    for i, s in enumerate(specs):
        if TRANSFORMS[s.name].images_only and len(input_shape) != 3:
            raise EdgekdError(f"{where}[{i}]: {s.name} works on (C, H, W) images; this data has inputs "
                              f"{tuple(input_shape)}: use noise, scale or time-shift")  # fmt: skip


__all__ = [
    "FLIP_VALID",
    "TRANSFORMS",
    "AugmentSpec",
    "Augmentation",
    "check_shapes",
    "parse_augment",
    "uniform",
]
