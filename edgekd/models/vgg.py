"""A small VGG-style CNN from MCU-friendly ops only: 3x3 conv, BN (folded at export), ReLU, 2x2 max
pooling, global average pooling, linear.

``stages`` lists the conv widths of each stage; every stage ends with a 2x2 max pool, so on 28x28 inputs
``features.0/1/2`` give 14x14 / 7x7 / 3x3 maps. Students and teachers built with the same number of stages
(any widths) have feature maps of the same spatial size, which feature losses (FitNet hints, activation
boundaries) pair through a 1x1 adapter. Inside a stage, ``features.i.j.1`` is the BN output before the
ReLU of conv ``j`` (the pre-activation that activation-boundary transfer taps).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from edgekd.models.cnn import conv_bn_act, scaled
from edgekd.models.registry import register_model


@register_model("vgg")
class VGG(nn.Module):
    """Stages of 3x3 conv-BN-ReLU layers each followed by 2x2 max pooling, then global average pooling,
    dropout and a linear classifier (the ``features`` / ``pool`` / ``flatten`` / ``dropout`` /
    ``classifier`` layout of the ``cnn`` models)."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        stages: Sequence[Sequence[int]] = ((16, 16), (32, 32), (64,)),
        width: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not stages or any(not s for s in stages):
            raise ValueError(f"stages must be a non-empty list of non-empty width lists, not {stages!r}")
        c = int(input_shape[0])
        blocks: list[nn.Module] = []
        for widths in stages:
            layers: list[nn.Module] = []
            for w in widths:
                cout = scaled(int(w), width)
                layers.append(conv_bn_act(c, cout, 3, 1))
                c = cout
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))
