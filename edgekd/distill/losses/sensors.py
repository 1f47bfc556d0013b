"""Privileged sensors for autoencoders: the teacher reconstructs every metric, the student a subset.

The teacher reads the privileged input (e.g. SMD's ``all_metrics``, ``teacher: {input: all_metrics}``)
and reconstructs all ``F`` metrics; the student reads and reconstructs only its ``k`` sensors (the
data set's ``features`` columns). The imitation term compares the student with the teacher's
reconstruction of those sensors: ``mean (f_s(x) - f_t(x*)[..., features])^2``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.errors import EdgekdError


def _check(s_shapes, t_shapes, params, where) -> None:
    feats = params.get("features")
    if not isinstance(feats, list) or not feats or not all(isinstance(f, int) and f >= 0 for f in feats):
        raise EdgekdError(
            f"{where}: params.features must list the student's 0-based metric columns "
            "(the same as data.options.features)"
        )


@register_loss("sensor-mse", tasks=("reconstruction",), check=_check,
               paper="privileged sensors (Lopez-Paz et al. 2016, applied to autoencoders)")  # fmt: skip
def sensor_mse(step: Step, features: list[int] | None = None) -> Tensor:
    """``mean (f_s(x) - f_t(x*)[..., features])^2``: match the teacher's reconstruction of the student's sensors."""
    t = step.teacher[..., list(features or [])]
    if t.shape != step.student.shape:
        raise EdgekdError(
            f"loss sensor-mse: the teacher's {len(features or [])} selected metrics give {tuple(t.shape)} but "
            f"the student outputs {tuple(step.student.shape)}; params.features must equal data.options.features"
        )
    return F.mse_loss(step.student, t)
