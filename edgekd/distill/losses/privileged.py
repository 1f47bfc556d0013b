"""Generalised distillation (Lopez-Paz, Bottou, Schölkopf & Vapnik, ICLR 2016, "Unifying distillation and
privileged information").

The teacher ``f_t`` reads the privileged input ``x*`` (``teacher: {input: <name>}``), the student only
``x``. Soft labels ``s_i = softmax(f_t(x*_i) / T)``; the imitation term is the cross-entropy
``-mean_i sum_c s_ic log softmax(f_s(x_i))_c`` (the student at temperature 1, as in the paper). The
method ``privileged`` adds ``(1 - lambda) CE(y, softmax(f_s(x)))``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import positive


def _check(s_shapes, t_shapes, params, where) -> None:
    positive(params, "temperature", where, 1.0)


@register_loss(
    "generalized-kd", tasks=("classification",), check=_check,
    paper="Lopez-Paz et al. 2016 (generalised distillation)",
)  # fmt: skip
def generalized_kd(step: Step, temperature: float = 1.0) -> Tensor:
    """Imitation ``-mean sum softmax(z_t / T) log softmax(z_s)`` (teacher softened, student at T = 1)."""
    s = F.softmax(step.teacher / temperature, dim=1)
    return -(s * F.log_softmax(step.student, dim=1)).sum(dim=1).mean()
