"""Several teachers as one: their outputs combined by a documented rule."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgekd.models.ensemble import COMBINE_RULES, combine_outputs


class EnsembleTeacher(nn.Module):
    """``mean-logits``: ``z = mean_k z_k``; ``mean-probs``: ``z = log(mean_k softmax(z_k))`` (so that
    ``softmax(z)`` is the averaged distribution; losses apply their temperature to ``z``)."""

    def __init__(self, teachers: list[nn.Module], combine: str = "mean-logits") -> None:
        super().__init__()
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine {combine!r}; valid: {COMBINE_RULES}")
        self.members = nn.ModuleList(teachers)
        self.combine = combine

    def forward(self, x: Tensor) -> Tensor:
        outs = torch.stack([m(x) for m in self.members])
        return combine_outputs(outs, outs.new_full((len(outs),), 1.0 / len(outs)), self.combine)
