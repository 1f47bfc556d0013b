"""ONE, on-the-fly native ensemble (Lan, Zhu & Gong, NeurIPS 2018, "Knowledge Distillation by On-the-Fly
Native Ensemble").

The student's first ``split`` feature blocks are a shared trunk; ``branches`` copies of the remaining
blocks and classifier sit on it (branch 0 is the student itself). A gate ``g = softmax(W pool(h))`` on the
trunk output weights the branches into the ensemble ``z_e = sum_k g_k z_k``, which teaches every branch:

``L = sum_k CE(y, z_k) + CE(y, z_e) + T^2 sum_k KL(softmax(z_e/T) || softmax(z_k/T))``

(the ensemble's soft targets held fixed in the KL term). One optimizer trains trunk, branches and gate.
Branch 0 (trunk + its blocks + classifier, a plain student) is evaluated and exported; the gate and the
other branches are dropped from the export (they are listed in ``networks.json``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses import cross_entropy, kd_loss
from edgekd.distill.losses.presets import check_positive
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.distill.methods.blocks import block_channels, check_blocks, classify, embed, run_blocks
from edgekd.errors import EdgekdError


@register_method("one")
class OnTheFlyNativeEnsemble(Distiller):
    """``sum_k CE(z_k) + CE(z_e) + T^2 sum_k KL(p_e^T || p_k^T)``, gated ensemble of branches on a shared trunk."""

    needs_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        branches: int = 3,
        split: int | None = None,
        temperature: float = 3.0,
        *,
        model_factory: Callable[[], nn.Module] | None = None,
        sample_x: Tensor | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__(student, None)
        if task != "classification":
            raise EdgekdError("method one: defined for classification data sets")
        if branches < 2:
            raise EdgekdError(f"method.params.branches={branches}: ONE needs at least 2 branches")
        check_positive("temperature", temperature)
        n = check_blocks(student, "one")
        split = n - 1 if split is None else int(split)
        if not 1 <= split < n:
            raise EdgekdError(
                f"method.params.split={split}: must share 1 to {n - 1} of the student's {n} feature blocks"
            )
        if model_factory is None or sample_x is None:
            raise EdgekdError("method one: needs a model factory and a sample batch")
        self.split, self.temperature = split, float(temperature)
        self.others = nn.ModuleList()
        for _ in range(branches - 1):
            b = model_factory()
            for i in range(split):  # the trunk is shared: the same modules, the same parameters
                b.features[i] = student.features[i]
            self.others.append(b)
        trunk_channels = block_channels(student, sample_x)[split - 1][0]
        self.gate = nn.Linear(trunk_channels, branches)

    @property
    def branches(self) -> list[nn.Module]:
        return [self.student, *self.others]

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        h = run_blocks(self.student, x, 0, self.split)
        logits = [classify(b, embed(b, run_blocks(b, h, self.split, len(b.features)))) for b in self.branches]
        g = F.softmax(
            self.gate(F.adaptive_avg_pool2d(h, 1).flatten(1) if h.dim() == 4 else h.flatten(1)), dim=1
        )
        z_e = (g.unsqueeze(2) * torch.stack(logits, dim=1)).sum(dim=1)
        t_e = z_e.detach()
        terms = {"ce": sum(cross_entropy(z, y) for z in logits), "ensemble_ce": cross_entropy(z_e, y),
                 "kd": sum(kd_loss(z, t_e, self.temperature) for z in logits)}  # fmt: skip
        return logits[0], terms

    def networks(self) -> dict[str, nn.Module]:
        return {f"branch{k}": b for k, b in enumerate(self.branches)}
