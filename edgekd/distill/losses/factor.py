"""Factor transfer (Kim, Park & Kwak, NeurIPS 2018, "Paraphrasing Complex Network").

A *paraphraser* P (conv encoder to ``m = round(k C_t)`` channels, rate ``k = 0.5``, and a decoder back)
is trained on the teacher's layer by reconstruction, ``ft-paraphraser``: ``mean (P_dec(P_enc(v_t)) -
v_t)^2`` (the first stage of a recipe; the student is untouched). A *translator* Tr (two convs to ``m``
channels) on the student's layer is then trained with ``factor-transfer``:
``mean_n || F_s/||F_s||_2 - F_t/||F_t||_2 ||_1`` with ``F_t = P_enc(v_t)`` (the paraphraser frozen) and
``F_s = Tr(u_s)``, flattened per example. The paraphraser is shared between the stages of a run (keyed by
the teacher path and rate), so stage 2 uses the one stage 1 trained. Paraphraser and translator train
with the student, are checkpointed and never exported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import need_maps, one_pair, positive, same_positions


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)
    )


def factor_channels(t_channels: int, rate: float) -> int:
    return max(1, round(rate * t_channels))


class Paraphraser(nn.Module):
    """``enc``: C_t -> m channels (two 3x3 convs); ``dec``: m -> C_t (the reconstruction)."""

    def __init__(self, channels: int, rate: float = 0.5) -> None:
        super().__init__()
        m = factor_channels(channels, rate)
        self.enc = nn.Sequential(_conv(channels, channels), _conv(channels, m))
        self.dec = nn.Sequential(_conv(m, channels), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, v: Tensor) -> Tensor:
        return self.dec(self.enc(v))


def _check(s_shapes, t_shapes, params, where) -> None:
    need_maps(s_shapes, t_shapes, where, "factor transfer")
    if s_shapes:
        same_positions(s_shapes, t_shapes, where, "factor transfer")
    positive(params, "rate", where, 0.5)
    one_pair(t_shapes, where, "factor transfer")


def _paraphraser(t_shapes, params, shared) -> Paraphraser:
    rate = float(params.get("rate", 0.5))
    key = f"paraphraser:{t_shapes[0]}:{rate}"
    if key not in shared:
        shared[key] = Paraphraser(t_shapes[0][0], rate)
    return shared[key]


def _own_paraphraser(s_shapes, t_shapes, params, shared) -> nn.Module:
    return nn.ModuleDict({"paraphraser": _paraphraser(t_shapes, params, shared)})


def _own_translator(s_shapes, t_shapes, params, shared) -> nn.Module:
    m = factor_channels(t_shapes[0][0], float(params.get("rate", 0.5)))
    c = s_shapes[0][0]
    return nn.ModuleDict(
        {
            "paraphraser": _paraphraser(t_shapes, params, shared),
            "translator": nn.Sequential(_conv(c, c), _conv(c, m)),
        }
    )


@register_loss(
    "ft-paraphraser", features=True, adapter=False, student_side=False, check=_check, owns=_own_paraphraser,
    paper="Kim et al. 2018 (factor transfer, paraphraser stage)",
)  # fmt: skip
def paraphraser_reconstruction(step: Step, rate: float = 0.5) -> Tensor:
    """Paraphraser pre-training on the teacher layer ``mean (P_dec(P_enc(v_t)) - v_t)^2``."""
    return F.mse_loss(step.module["paraphraser"](step.ft), step.ft)


def factor_distance(f_s: Tensor, f_t: Tensor) -> Tensor:
    """``mean_n || f_s/||f_s||_2 - f_t/||f_t||_2 ||_1`` over flattened factors."""
    return (F.normalize(f_s.flatten(1), dim=1) - F.normalize(f_t.flatten(1), dim=1)).abs().sum(dim=1).mean()


@register_loss(
    "factor-transfer", features=True, adapter=False, check=_check, owns=_own_translator,
    paper="Kim et al. 2018 (factor transfer)",
)  # fmt: skip
def factor_transfer(step: Step, rate: float = 0.5) -> Tensor:
    """Factor transfer ``mean_n ||F_s/||F_s|| - F_t/||F_t|| ||_1``, ``F_s = Tr(u_s)``, ``F_t = P_enc(v_t)`` (frozen)."""
    para = step.module["paraphraser"]
    was = para.training
    para.eval()
    with torch.no_grad():
        f_t = para.enc(step.ft)
    para.train(was)
    return factor_distance(step.module["translator"](step.fs), f_t)
