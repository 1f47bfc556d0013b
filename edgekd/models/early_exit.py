"""An early exit of a ``cnn``: its first feature blocks and an auxiliary head (BYOT, Zhang et al. 2019).

The head is a bottleneck (1x1, 3x3, 1x1 convs with batch-norm and ReLU) to ``head_channels``, global
average pooling and a linear classifier: only ops TFLite Micro runs in int8, so an exit exports like any
student (``edgekd export run/network-exit0.pt --target tflite-micro``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.models.cnn import TinyCNN
from edgekd.models.registry import register_model


def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class AuxHead(nn.Module):
    """Bottleneck (1x1 -> 3x3 -> 1x1 to ``out_channels``), global pooling, linear classifier."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int) -> None:
        super().__init__()
        mid = max(4, out_channels // 2)
        self.bottleneck = nn.Sequential(
            _cbr(in_channels, mid, 1), _cbr(mid, mid, 3), _cbr(mid, out_channels, 1)
        )
        self.classifier = nn.Linear(out_channels, num_classes)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled feature, logits)``."""
        f = F.adaptive_avg_pool2d(self.bottleneck(h), 1).flatten(1)
        return f, self.classifier(f)


@register_model("cnn-early-exit")
class EarlyExitCNN(nn.Module):
    """The first ``exit + 1`` feature blocks of ``cnn(channels, depthwise, activation)`` and an auxiliary head."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32, 64),
        depthwise: bool = True,
        activation: str = "relu",
        exit: int = 0,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        base = TinyCNN(input_shape, num_classes, channels, depthwise=depthwise, activation=activation)
        self.features = nn.Sequential(*list(base.features)[: exit + 1])
        self.head = AuxHead(int(channels[exit]), int(head_channels), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))[1]


def cnn_config(net: nn.Module) -> dict | None:
    """``channels``, ``depthwise`` and ``activation`` of a ``cnn`` (TinyCNN) built with width 1, else None."""
    if not isinstance(net, TinyCNN):
        return None
    blocks = list(net.features)
    depthwise = len(blocks) > 1 and isinstance(blocks[1][0], nn.Sequential)
    channels = [b[-1][1].num_features if depthwise and i else b[1].num_features for i, b in enumerate(blocks)]
    relu6 = any(isinstance(m, nn.ReLU6) for m in net.modules())
    return {"channels": channels, "depthwise": depthwise, "activation": "relu6" if relu6 else "relu"}
