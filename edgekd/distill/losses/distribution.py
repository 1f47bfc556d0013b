"""Distribution matching between feature maps: each example's channels are a set of samples.

For a layer with ``C`` channels and ``HW`` positions, every channel ``f_c`` (an HW-vector, L2-normalised)
is one sample of that example's distribution; student and teacher sets are compared by the squared
maximum mean discrepancy
``MMD^2 = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') - 2 mean_{i,j} k(s_j, t_i)``
averaged over the batch. Channel counts may differ; the spatial sizes must agree.

* ``nst`` — Neuron Selectivity Transfer (Huang & Wang 2017): polynomial kernel ``k(a, b) = (a.b + c)^d``
  with ``d = 2, c = 0``.
* ``mmd`` — the same with ``kernel: poly`` (``degree``, ``c``) or ``kernel: linear`` (``k = a.b``, i.e.
  ``|| mean_j s_j - mean_i t_i ||^2``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import need_maps, one_pair, same_positions
from edgekd.errors import EdgekdError

KERNELS = ("poly", "linear")


def _channels(f: Tensor) -> Tensor:
    """``(N, C, ...) -> (N, C, positions)`` with each channel L2-normalised over its positions."""
    return F.normalize(f.flatten(2), dim=2)


def mmd2(fs: Tensor, ft: Tensor, kernel: str = "poly", degree: float = 2.0, c: float = 0.0) -> Tensor:
    """Squared MMD between the channel sets of student and teacher, averaged over the batch."""
    s, t = _channels(fs), _channels(ft)

    def k(a: Tensor, b: Tensor) -> Tensor:
        g = a @ b.transpose(1, 2)
        return g if kernel == "linear" else (g + c).pow(degree)

    return (k(t, t).mean(dim=(1, 2)) + k(s, s).mean(dim=(1, 2)) - 2 * k(s, t).mean(dim=(1, 2))).mean()


def _check(s_shapes, t_shapes, params, where) -> None:
    need_maps(s_shapes, t_shapes, where, "distribution matching", ranks=(2, 3))
    same_positions(s_shapes, t_shapes, where, "distribution matching")
    if params.get("kernel", "poly") not in KERNELS:
        raise EdgekdError(f"{where}: params.kernel={params['kernel']!r}; valid: {', '.join(KERNELS)}")
    one_pair(s_shapes, where, "distribution matching")


@register_loss("nst", features=True, adapter=False, check=_check, paper="Huang & Wang 2017 (NST)")
def nst(step: Step) -> Tensor:
    """Neuron selectivity transfer: MMD^2 of normalised channel maps, kernel ``(a.b)^2``."""
    return mmd2(step.fs, step.ft, "poly", 2.0, 0.0)


@register_loss("mmd", features=True, adapter=False, check=_check, paper="Huang & Wang 2017 (MMD kernels)")
def mmd(step: Step, kernel: str = "poly", degree: float = 2.0, c: float = 0.0) -> Tensor:
    """MMD^2 of normalised channel maps, ``kernel: poly ((a.b + c)^degree) | linear (a.b)``."""
    return mmd2(step.fs, step.ft, kernel, degree, c)
