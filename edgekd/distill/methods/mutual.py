"""Deep mutual learning (Zhang et al., CVPR 2018): K peers trained together from scratch.

Each peer i minimises ``CE(y, p_i) + 1/(K-1) sum_{j != i} KL(p_j || p_i)`` with the other peers'
predictions held fixed in its term. Every peer has its own optimizer (``param_groups``); the first peer
is the exported student, all peers are recorded in ``networks.json``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses import cross_entropy
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.errors import EdgekdError


@register_method("dml")
class MutualLearning(Distiller):
    """``L_i = CE(y, p_i) + 1/(K-1) sum_{j!=i} KL(p_j || p_i)`` for K peers, one optimizer each."""

    needs_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        peers: int = 2,
        *,
        model_factory: Callable[[], nn.Module] | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__(student, None)
        if peers < 2:
            raise EdgekdError(f"method.params.peers={peers}: mutual learning needs at least 2 peers")
        if task != "classification":
            raise EdgekdError("method dml: mutual learning is defined for classification data sets")
        if model_factory is None:
            raise EdgekdError("method dml: needs a model factory to build the other peers")
        self.others = nn.ModuleList([model_factory() for _ in range(peers - 1)])

    @property
    def peers(self) -> list[nn.Module]:
        return [self.student, *self.others]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {f"peer{i}": list(p.parameters()) for i, p in enumerate(self.peers)}

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = [p(x) for p in self.peers]
        log_p = [F.log_softmax(z, dim=1) for z in logits]
        k = len(logits)
        terms: dict[str, Tensor] = {}
        for i, z in enumerate(logits):
            terms[f"peer{i}_ce"] = cross_entropy(z, y)
            kl = sum(
                F.kl_div(log_p[i], log_p[j].detach(), log_target=True, reduction="batchmean")
                for j in range(k)
                if j != i
            )
            terms[f"peer{i}_kl"] = kl / (k - 1)
        return logits[0], terms

    def networks(self) -> dict[str, nn.Module]:
        return {f"peer{i}": p for i, p in enumerate(self.peers)}
