"""Be Your Own Teacher (Zhang et al., ICCV 2019, "Be Your Own Teacher: Improve the Performance of
Convolutional Neural Networks via Self Distillation").

Auxiliary classifiers sit after the student's shallower feature blocks, each behind a bottleneck
(1x1 conv, 3x3 conv, 1x1 conv to the deepest block's width, then pooling) that yields a feature ``F_i`` of
the same size as the deepest pooled feature ``F_C``. The deepest head ``q_C`` and its features teach them:

``L = (1 - a) sum_i CE(y, q_i) + CE(y, q_C) + a T^2 sum_i KL(q_C^T || q_i^T) + lam sum_i mean (F_i - F_C)^2``

over the shallow heads ``i`` (the deepest outputs held fixed in the teacher terms). The main (deepest)
head is the student that is evaluated and exported; bottlenecks and auxiliary heads are dropped. On request
(``export_exit: k``, a ``cnn`` student) the exit after block ``k`` is also saved as its own network,
``network-exit<k>.pt`` (model ``cnn-early-exit``: blocks 0..k and that head), which exports like any student.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses import cross_entropy, kd_loss
from edgekd.distill.losses.presets import check_unit
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.distill.methods.blocks import block_channels, check_blocks, classify, embed
from edgekd.errors import EdgekdError
from edgekd.models.early_exit import AuxHead, EarlyExitCNN, cnn_config


@register_method("byot")
class BeYourOwnTeacher(Distiller):
    """Self distillation: the deepest head and its features teach auxiliary heads at shallower blocks."""

    needs_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        exits: Sequence[int] | None = None,
        alpha: float = 0.5,
        temperature: float = 3.0,
        feature_weight: float = 0.1,
        export_exit: int | None = None,
        *,
        sample_x: Tensor | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__(student, None)
        if task != "classification":
            raise EdgekdError("method byot: defined for classification data sets")
        n = check_blocks(student, "byot")
        exits = list(range(n - 1)) if exits is None else [int(e) for e in exits]
        if not exits or any(not 0 <= e < n - 1 for e in exits) or len(set(exits)) != len(exits):
            raise EdgekdError(
                f"method.params.exits={exits}: give distinct feature-block indices from 0 to {n - 2} "
                "(the deepest block is the main head)"
            )
        check_unit("alpha", alpha)
        if temperature <= 0 or feature_weight < 0:
            raise EdgekdError("method.params: temperature must be > 0 and feature_weight >= 0")
        if sample_x is None:
            raise EdgekdError("method byot: needs a sample batch to size the auxiliary heads")
        shapes = block_channels(student, sample_x)
        if any(len(s) != 3 for s in shapes):
            raise EdgekdError("method byot: the student's feature blocks must give (C, H, W) maps")
        num_classes = student.classifier.out_features
        if export_exit is not None:
            if export_exit not in exits:
                raise EdgekdError(
                    f"method.params.export_exit={export_exit}: not one of the exits {sorted(exits)}"
                )
            if cnn_config(student) is None:
                raise EdgekdError(
                    "method.params.export_exit: early exits are exported for `cnn` students only"
                )
        self.export_exit = export_exit
        self.input_shape = list(sample_x.shape[1:])
        self.exits = sorted(exits)
        self.heads = nn.ModuleDict(
            {str(e): AuxHead(shapes[e][0], shapes[-1][0], num_classes) for e in self.exits}
        )
        self.alpha, self.temperature, self.feature_weight = (
            float(alpha),
            float(temperature),
            float(feature_weight),
        )

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        s = self.student
        h, taps = x, {}
        for i, block in enumerate(s.features):
            h = block(h)
            if str(i) in self.heads:
                taps[i] = h
        f_c = embed(s, h)
        z_c = classify(s, f_c)
        terms = {"ce": cross_entropy(z_c, y)}
        aux_ce, kd, feat = 0.0, 0.0, 0.0
        for i, hi in taps.items():
            f_i, z_i = self.heads[str(i)](hi)
            aux_ce = aux_ce + cross_entropy(z_i, y)
            kd = kd + kd_loss(z_i, z_c.detach(), self.temperature)
            feat = feat + F.mse_loss(f_i, f_c.detach())
        terms["aux_ce"] = (1 - self.alpha) * aux_ce
        terms["aux_kd"] = self.alpha * kd
        terms["aux_feature"] = self.feature_weight * feat
        return z_c, terms

    def early_exit(self, k: int) -> nn.Module:
        """Blocks 0..k of the student and the auxiliary head k as one plain network (``cnn-early-exit``)."""
        s = self.student
        kw = {**cnn_config(s), "input_shape": self.input_shape, "num_classes": s.classifier.out_features,
              "exit": k, "head_channels": self.heads[str(k)].classifier.in_features}  # fmt: skip
        net = EarlyExitCNN(**kw)
        net.features.load_state_dict(nn.Sequential(*list(s.features)[: k + 1]).state_dict())
        net.head.load_state_dict(self.heads[str(k)].state_dict())
        net.edgekd_model = ("cnn-early-exit", kw)
        return net.eval()

    def networks(self) -> dict[str, nn.Module]:
        nets = {"main": self.student}
        if self.export_exit is not None:
            nets[f"exit{self.export_exit}"] = self.early_exit(self.export_exit)
        return nets
