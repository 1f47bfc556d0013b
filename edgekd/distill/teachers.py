"""Several teachers as one: their outputs combined by a documented rule."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

COMBINE_RULES = ("mean-logits", "mean-probs")


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
        if self.combine == "mean-logits":
            return outs.mean(0)
        return torch.logsumexp(torch.log_softmax(outs, dim=-1), dim=0) - math.log(len(self.members))
