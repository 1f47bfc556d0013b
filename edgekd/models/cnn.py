"""Small CNNs built only from MCU-friendly int8 ops: conv, depthwise conv, BN (folded), ReLU/ReLU6,
average pooling, linear. A width multiplier scales every layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from edgekd.models.registry import register_model


def scaled(channels: int, width: float, divisor: int = 4) -> int:
    """Channels times ``width``, rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(channels * width + divisor / 2) // divisor * divisor)


def conv_bn_act(
    cin: int, cout: int, k: int, stride: int, groups: int = 1, act: str = "relu"
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6() if act == "relu6" else nn.ReLU(),
    )


class TinyCNN(nn.Module):
    """Stem conv, then per stage either a 3x3 conv or a depthwise-separable block (stride 2 on stage
    entry except the first), global average pooling, dropout, linear classifier."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32, 64),
        width: float = 1.0,
        depthwise: bool = True,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ("relu", "relu6"):
            raise ValueError(f"activation must be relu or relu6, not {activation!r}")
        chans = [scaled(c, width) for c in channels]
        cin = int(input_shape[0])
        blocks: list[nn.Module] = [conv_bn_act(cin, chans[0], 3, 1, act=activation)]
        c = chans[0]
        for i, cout in enumerate(chans[1:]):
            stride = 2 if i < 2 else 1
            if depthwise:
                blocks.append(
                    nn.Sequential(
                        conv_bn_act(c, c, 3, stride, groups=c, act=activation),
                        conv_bn_act(c, cout, 1, 1, act=activation),
                    )
                )
            else:
                blocks.append(conv_bn_act(c, cout, 3, stride, act=activation))
            c = cout
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


register_model("cnn")(TinyCNN)


@register_model("cnn-teacher")
def cnn_teacher(
    input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0
) -> TinyCNN:
    """A larger plain-conv CNN used as a 'cloud' teacher on 28x28 images."""
    return TinyCNN(input_shape, num_classes, (32, 64, 128, 128), width, depthwise=False, dropout=0.3)
