"""Tiny object detectors for microcontrollers: a CenterNet-style detector and a FOMO-style centroid grid.

Both are convolutions only (conv, depthwise conv, BN folded at export, ReLU, residual add): no
upsampling, no concatenation, no NMS in the graph, and **one output tensor** (edgekd's exporter takes one
output). Decoding (peak picking, boxes) runs on the host (:mod:`edgekd.models.detection_codec`) and in
the firmware's post-processing.

``centernet`` (Zhou, Wang & Krähenbühl 2019, "Objects as Points"): stem 3x3 conv stride 2, a
depthwise-separable block stride 2, then depthwise-separable residual blocks (``kernel`` x ``kernel``
depthwise, default 5 for a large receptive field) at **stride 4**, and a head (3x3 depthwise + 1x1, then
one 1x1 conv). Output ``(N, channels, H/4, W/4)``, channels by :class:`DetectionLayout`:

* ``head="wh"``: ``[heat map logits C | w, h 2 | dx, dy 2]``: class heat-map *logits* (the sigmoid is
  applied by the losses and the decoder, so the graph ends in a single conv and keeps one quantisation
  scale over logits and box values), box size in grid cells (input pixels / 4), centre offset in cells.
* ``head="edges"``: ``[heat map logits C | left bins | top bins | right bins | bottom bins]``: for each
  box edge a distribution (logits over ``bins`` values ``0, 1, ..., bins - 1`` cells) of its distance
  from the cell's centre point, as GFL (Li et al., NeurIPS 2020) and localization distillation (Zheng et
  al., CVPR 2022) use; the distance is the distribution's expectation.

``fomo`` (Edge Impulse's FOMO, 2022; MobileNet trunk cut at stride 8): stem and depthwise-separable
blocks down to **stride 8**, a 1x1 head; output ``(N, C + 1, H/8, W/8)`` per-cell class logits with
channel 0 = background (softmax over channels): a cell holds an object whose centre falls in it.

``centernet-teacher`` / ``fomo-teacher`` are wider and deeper members of the same families.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from edgekd.errors import EdgekdError
from edgekd.models.cnn import conv_bn_act, scaled
from edgekd.models.registry import register_model

HEADS = ("wh", "edges")
HEAT_PRIOR = 0.1  # initial heat-map probability (CenterNet's bias -2.19)


@dataclass(frozen=True)
class DetectionLayout:
    """The channel layout of a CenterNet-style output (see the module docstring)."""

    num_classes: int
    head: str = "wh"
    bins: int = 8

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise EdgekdError(f"detection head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.num_classes < 1 or (self.head == "edges" and self.bins < 2):
            raise EdgekdError(
                f"detection layout: num_classes={self.num_classes} (>= 1), bins={self.bins} (>= 2)"
            )

    @property
    def box_channels(self) -> int:
        return 4 if self.head == "wh" else 4 * self.bins

    @property
    def channels(self) -> int:
        return self.num_classes + self.box_channels

    @classmethod
    def of(cls, channels: int, head: str = "wh", bins: int = 8, where: str = "detection") -> DetectionLayout:
        """The layout of an output with ``channels`` channels (the class count is what the box leaves)."""
        box = 4 if head == "wh" else 4 * int(bins)
        if channels - box < 1:
            raise EdgekdError(
                f"{where}: an output of {channels} channels has no heat map for head {head!r} ({box} box channels)"
            )
        return cls(channels - box, head, int(bins))

    def heatmap(self, out: Tensor) -> Tensor:
        """Heat-map logits ``(N, C, h, w)``."""
        return out[:, : self.num_classes]

    def wh(self, out: Tensor) -> Tensor:
        return out[:, self.num_classes : self.num_classes + 2]

    def offset(self, out: Tensor) -> Tensor:
        return out[:, self.num_classes + 2 : self.num_classes + 4]

    def edges(self, out: Tensor) -> Tensor:
        """Edge-distance logits ``(N, 4, bins, h, w)`` (left, top, right, bottom)."""
        n, _, h, w = out.shape
        return out[:, self.num_classes :].reshape(n, 4, self.bins, h, w)


class DSBlock(nn.Module):
    """Depthwise ``kernel`` x ``kernel`` (stride) + 1x1 pointwise, BN and ReLU after each; a residual add
    when the stride is 1 and the channels match."""

    def __init__(self, cin: int, cout: int, stride: int = 1, kernel: int = 3) -> None:
        super().__init__()
        self.dw = conv_bn_act(cin, cin, kernel, stride, groups=cin)
        self.pw = conv_bn_act(cin, cout, 1, 1)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.pw(self.dw(x))
        return x + out if self.use_res else out


def _check_input(input_shape: Sequence[int], stride: int, name: str) -> tuple[int, int, int]:
    c, h, w = (int(s) for s in input_shape)
    if h % stride or w % stride:
        raise EdgekdError(f"model {name!r}: input {h}x{w} must be a multiple of the output stride {stride}")
    return c, h, w


def _trunk(cin: int, chans: list[int], strides: list[int], kernel: int) -> tuple[nn.Sequential, int]:
    """Stem conv (stride ``strides[0]``) then one block per further channel count."""
    blocks: list[nn.Module] = [conv_bn_act(cin, chans[0], 3, strides[0])]
    for c_in, c_out, s in zip(chans, chans[1:], strides[1:]):
        blocks.append(DSBlock(c_in, c_out, s, 3 if s > 1 else kernel))
    return nn.Sequential(*blocks), chans[-1]


class CenterNetTiny(nn.Module):
    """CenterNet-style detector at stride 4 on a depthwise-separable trunk (see the module docstring)."""

    stride = 4

    def __init__(
        self, input_shape: Sequence[int] = (1, 96, 96), num_classes: int = 10,
        channels: Sequence[int] = (16, 32, 32, 32, 32), width: float = 1.0, kernel: int = 5,
        head: str = "wh", bins: int = 8, head_channels: int = 32,
    ) -> None:  # fmt: skip
        super().__init__()
        cin, _, _ = _check_input(input_shape, self.stride, "centernet")
        if len(channels) < 2:
            raise EdgekdError("model 'centernet': channels needs at least two entries (stem, stride-4 block)")
        self.layout = DetectionLayout(int(num_classes), head, int(bins))
        chans = [scaled(c, width) for c in channels]
        strides = [2, 2] + [1] * (len(chans) - 2)
        self.features, c = _trunk(cin, chans, strides, kernel)
        hidden = scaled(head_channels, width)
        self.head = nn.Sequential(DSBlock(c, hidden, 1, 3), nn.Conv2d(hidden, self.layout.channels, 1))
        nn.init.constant_(
            self.head[-1].bias[: self.layout.num_classes], -math.log((1 - HEAT_PRIOR) / HEAT_PRIOR)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class FomoTiny(nn.Module):
    """FOMO-style centroid grid at stride 8: per-cell logits over background + classes."""

    stride = 8

    def __init__(
        self, input_shape: Sequence[int] = (1, 96, 96), num_classes: int = 10,
        channels: Sequence[int] = (16, 32, 64, 64), width: float = 1.0, kernel: int = 3, head_channels: int = 32,
    ) -> None:  # fmt: skip
        super().__init__()
        cin, _, _ = _check_input(input_shape, self.stride, "fomo")
        if len(channels) < 3:
            raise EdgekdError(
                "model 'fomo': channels needs at least three entries (stem, stride 4, stride 8)"
            )
        chans = [scaled(c, width) for c in channels]
        strides = [2, 2, 2] + [1] * (len(chans) - 3)
        self.features, c = _trunk(cin, chans, strides, kernel)
        hidden = scaled(head_channels, width)
        self.head = nn.Sequential(conv_bn_act(c, hidden, 1, 1), nn.Conv2d(hidden, int(num_classes) + 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


register_model("centernet")(CenterNetTiny)
register_model("fomo")(FomoTiny)


@register_model("centernet-teacher")
def centernet_teacher(
    input_shape: Sequence[int] = (1, 96, 96), num_classes: int = 10, width: float = 1.0, head: str = "wh",
    bins: int = 8,
) -> CenterNetTiny:  # fmt: skip
    """A wider, deeper CenterNet-style teacher (32 -> 64 -> 5 x 128 channels, head 96)."""
    return CenterNetTiny(
        input_shape, num_classes, (32, 64, 128, 128, 128, 128, 128), width, 5, head, bins, 96
    )


@register_model("fomo-teacher")
def fomo_teacher(
    input_shape: Sequence[int] = (1, 96, 96), num_classes: int = 10, width: float = 1.0
) -> FomoTiny:
    """A wider, deeper FOMO-style teacher (32 -> 64 -> 128 -> 3 x 128 channels, 5x5 depthwise, head 96)."""
    return FomoTiny(input_shape, num_classes, (32, 64, 128, 128, 128, 128), width, 5, 96)
