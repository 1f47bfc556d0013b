"""MobileNetV2-Tiny: inverted-residual blocks (Sandler et al., CVPR 2018) sized for microcontrollers.

Only MCU-friendly int8 ops: 1x1 / 3x3 conv, depthwise 3x3 conv, BN (folded at export), ReLU6, add,
global average pooling, linear. Each block: 1x1 expand (skipped when ``expand == 1``) -> depthwise 3x3
(stride) -> 1x1 linear projection, with a residual add when stride is 1 and channels match. The NetAug
family (width multipliers per stage, expand ratios per block) is registered at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from edgekd.models.registry import register_model

# (expand ratio, output channels, repeats, first stride), sized for 28x28 inputs
DEFAULT_BLOCKS: list[list[float]] = [[1, 8, 1, 1], [4, 12, 2, 2], [4, 16, 2, 2], [4, 24, 1, 1]]


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 project (linear), residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float) -> None:
        super().__init__()
        hidden = max(1, int(round(cin * expand)))
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1))
        else:
            hidden = cin
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, 1, act=False),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if self.use_res and out.shape[1] == x.shape[1]:
            return x + out
        return out


def _scale(c: float, width: float) -> int:
    return max(4, int(c * width + 2) // 4 * 4)


class MobileNetV2Tiny(nn.Module):
    """Stem 3x3 conv, inverted-residual stages, 1x1 conv to ``last_channels``, pooling, linear."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        stem_channels: int = 8,
        blocks: Sequence[Sequence[float]] | None = None,
        last_channels: int = 64,
        width: float = 1.0,
        dropout: float = 0.0,
        expand_per_block: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        blocks = [list(b) for b in (blocks or DEFAULT_BLOCKS)]
        self.config: dict[str, Any] = {
            "input_shape": [int(s) for s in input_shape], "num_classes": int(num_classes),
            "stem_channels": int(stem_channels), "blocks": blocks, "last_channels": int(last_channels),
            "width": float(width), "dropout": float(dropout),
            "expand_per_block": list(expand_per_block) if expand_per_block else None,
        }  # fmt: skip
        n_blocks = sum(int(b[2]) for b in blocks)
        if expand_per_block is not None and len(expand_per_block) != n_blocks:
            raise ValueError(f"expand_per_block needs {n_blocks} values, got {len(expand_per_block)}")
        c = _scale(stem_channels, width)
        layers: list[nn.Module] = [_conv_bn(int(input_shape[0]), c, 3, 1)]
        i = 0
        for expand, cout, n, stride in blocks:
            cout = _scale(cout, width)
            for r in range(int(n)):
                e = expand_per_block[i] if expand_per_block is not None else expand
                layers.append(InvertedResidual(c, cout, int(stride) if r == 0 else 1, float(e)))
                c = cout
                i += 1
        last = _scale(last_channels, width)
        layers.append(_conv_bn(c, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


@register_model("mbv2-tiny")
def mbv2_tiny(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    stem_channels: int = 8,
    blocks: Sequence[Sequence[float]] | None = None,
    last_channels: int = 64,
    width: float = 1.0,
    dropout: float = 0.0,
) -> MobileNetV2Tiny:
    """MobileNetV2-Tiny; ``blocks`` rows are ``[expand, channels, repeats, stride]``."""
    return MobileNetV2Tiny(input_shape, num_classes, stem_channels, blocks, last_channels, width, dropout)


# ------------------------------------------------------------------------------------------------
# NetAug family: width groups = stem, every stage, last conv; expand ratio per block (blocks with
# expand 1 have no expand conv and stay at 1).


def _spec(m: nn.Module) -> dict[str, Any]:
    assert isinstance(m, MobileNetV2Tiny)
    kw = dict(m.config)
    w = kw.pop("width")
    # absolute channel counts at width 1.0
    kw["stem_channels"] = _scale(kw["stem_channels"], w)
    kw["blocks"] = [[b[0], _scale(b[1], w), b[2], b[3]] for b in kw["blocks"]]
    kw["last_channels"] = _scale(kw["last_channels"], w)
    kw["width"] = 1.0
    if kw["expand_per_block"] is None:
        kw["expand_per_block"] = [float(b[0]) for b in kw["blocks"] for _ in range(int(b[2]))]
    return kw


def _widen(kw: dict[str, Any], mults: Sequence[float], expand: Sequence[float]) -> dict[str, Any]:
    from edgekd.models.dynamic import widen_channels

    out = dict(kw)
    mults = list(mults)
    # a stage whose first block keeps a residual in the base model must keep the previous group's width
    prev_c = kw["stem_channels"]
    for s, b in enumerate(kw["blocks"]):
        if int(b[3]) == 1 and int(b[1]) == prev_c:
            mults[s + 1] = mults[s]
        prev_c = int(b[1])
    out["stem_channels"] = widen_channels(kw["stem_channels"], mults[0])
    out["blocks"] = [
        [b[0], widen_channels(int(b[1]), mults[s + 1]), b[2], b[3]] for s, b in enumerate(kw["blocks"])
    ]
    out["last_channels"] = widen_channels(kw["last_channels"], mults[-1])
    base_e = kw["expand_per_block"]
    if expand:
        out["expand_per_block"] = [e if e == 1 else max(e, a) for e, a in zip(base_e, expand)]
    return out


def _register_family() -> None:
    from edgekd.models.dynamic import Family, register_family

    register_family(
        MobileNetV2Tiny,
        Family(
            spec=_spec,
            build=lambda kw: MobileNetV2Tiny(**kw),
            widen=_widen,
            groups=lambda kw: len(kw["blocks"]) + 2,
            blocks=lambda kw: sum(int(b[2]) for b in kw["blocks"]),
            base_expand=lambda kw: [float(e) for e in kw["expand_per_block"]],
        ),
    )


_register_family()
