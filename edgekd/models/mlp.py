"""Multi-layer perceptrons, including Hinton et al. (2015) MNIST teacher and student."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from edgekd.models.registry import register_model


class MLP(nn.Module):
    """Flatten -> [Dropout(p_in)] -> (Linear -> ReLU -> Dropout(p_hidden)) x len(hidden) -> Linear."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        hidden: Sequence[int] = (800, 800),
        dropout_input: float = 0.0,
        dropout_hidden: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if dropout_input > 0:
            layers.append(nn.Dropout(dropout_input))
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout_hidden > 0:
                layers.append(nn.Dropout(dropout_hidden))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


register_model("mlp")(MLP)


@register_model("hinton-teacher")
def hinton_teacher(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    dropout_input: float = 0.2,
    dropout_hidden: float = 0.5,
) -> MLP:
    """784-1200-1200-10 with dropout 0.2 on inputs and 0.5 on hidden units (Hinton et al., 2015)."""
    return MLP(input_shape, num_classes, (1200, 1200), dropout_input, dropout_hidden)


@register_model("hinton-student")
def hinton_student(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    dropout_input: float = 0.0,
    dropout_hidden: float = 0.0,
) -> MLP:
    """784-800-800-10, no regularisation (Hinton et al., 2015)."""
    return MLP(input_shape, num_classes, (800, 800), dropout_input, dropout_hidden)
