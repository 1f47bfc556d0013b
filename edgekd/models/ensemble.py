"""Teachers made of several saved networks, rebuildable from ``(name, kwargs)`` like any model.

``ensemble``: a weighted ensemble (e.g. the one ensemble selection chose, Born-Again generations, or
the several teachers of a recipe);
``specialist-ensemble``: a generalist plus specialists on class subsets, combined as in Hinton et al.
2015. Member names come from files, so they must be registered models (never code references).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import EdgekdError
from edgekd.models.registry import build_model, check_name_from_file, register_model

COMBINE_RULES = ("mean-logits", "mean-probs")


def combine_outputs(outs: Tensor, weights: Tensor, combine: str) -> Tensor:
    """Members' outputs ``(K, N, ...)`` and weights ``(K,)`` summing to 1: ``mean-logits`` gives
    ``sum_k w_k z_k`` (any outputs, e.g. reconstructions), ``mean-probs`` ``log sum_k w_k softmax(z_k)``."""
    w = weights.to(device=outs.device, dtype=outs.dtype).view(-1, *[1] * (outs.dim() - 1))
    if combine == "mean-logits":
        return (w * outs).sum(0)
    return torch.logsumexp(F.log_softmax(outs, dim=-1) + w.clamp(min=1e-30).log(), dim=0)


def _member(spec: Any, where: str) -> nn.Module:
    if isinstance(spec, nn.Module):  # built in memory (a recipe's teachers): not rebuilt from a file
        return spec
    if not isinstance(spec, dict) or not isinstance(spec.get("kwargs", {}), dict):
        raise EdgekdError(f"{where}: each member must be {{name, kwargs}}")
    return build_model(check_name_from_file(spec.get("name"), where), **spec.get("kwargs", {}))


@register_model("ensemble")
class WeightedEnsemble(nn.Module):
    """``mean-probs``: ``log sum_k w_k softmax(z_k)`` (so ``softmax`` of it is the averaged
    distribution; losses apply their temperature to it); ``mean-logits``: ``sum_k w_k z_k``. Weights
    sum to 1 (default: equal). ``members``: ``{name, kwargs}`` specs, rebuilt (as a saved file is), or
    built modules (a recipe's teachers, in memory only).

    The default rule is ``mean-probs``: saved ``ensemble`` files are rebuilt from their kwargs, and one
    written without ``combine`` has always meant ``mean-probs``; a recipe passes ``teacher.combine``
    (whose own default is ``mean-logits``) explicitly.
    """

    def __init__(
        self,
        members: Sequence[dict | nn.Module],
        combine: str = "mean-probs",
        weights: Sequence[float] | None = None,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise EdgekdError("model ensemble: needs at least one member")
        if combine not in COMBINE_RULES:
            raise EdgekdError(f"model ensemble: combine={combine!r}; valid: mean-probs, mean-logits")
        w = [1.0] * len(members) if weights is None else [float(v) for v in weights]
        if len(w) != len(members) or any(v < 0 for v in w) or sum(w) <= 0:
            raise EdgekdError("model ensemble: weights must be one non-negative number per member, not all 0")
        self.members = nn.ModuleList([_member(m, "model ensemble") for m in members])
        self.register_buffer("weights", torch.tensor([v / sum(w) for v in w]), persistent=False)
        self.combine = combine

    def forward(self, x: Tensor) -> Tensor:
        return combine_outputs(torch.stack([m(x) for m in self.members]), self.weights, self.combine)


@register_model("specialist-ensemble")
class SpecialistEnsemble(nn.Module):
    """Generalist + specialists (each over its class subset plus a dustbin class), combined per example.

    For each example, the specialists whose subset meets the generalist's ``top_n`` classes are active;
    the combined distribution ``q`` minimises ``KL(p_g || q) + sum_{m active} KL(p_m || q_m)``, where
    ``q_m`` is ``q`` on the subset with every other class lumped into the dustbin (Hinton et al. 2015,
    section 5), found by ``steps`` gradient steps on the logits from ``log p_g``. Returns ``log q``.
    """

    def __init__(
        self,
        generalist: dict,
        specialists: Sequence[dict],
        subsets: Sequence[Sequence[int]],
        top_n: int = 1,
        steps: int = 30,
        lr: float = 1.0,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if len(specialists) != len(subsets):
            raise EdgekdError("model specialist-ensemble: one class subset per specialist")
        self.generalist = _member(generalist, "model specialist-ensemble")
        self.specialists = nn.ModuleList([_member(s, "model specialist-ensemble") for s in specialists])
        self.subsets = [[int(c) for c in s] for s in subsets]
        self.top_n, self.steps, self.lr = int(top_n), int(steps), float(lr)

    def forward(self, x: Tensor) -> Tensor:
        log_g = F.log_softmax(self.generalist(x).float(), dim=1)
        n, c = log_g.shape
        top = log_g.topk(min(self.top_n, c), dim=1).indices
        targets = []
        for spec, subset in zip(self.specialists, self.subsets):
            member = torch.zeros(c, dtype=torch.bool, device=x.device)
            member[subset] = True
            active = member[top].any(dim=1).to(log_g.dtype)  # (N,)
            targets.append((F.softmax(spec(x).float(), dim=1), member, active))
        with torch.enable_grad():
            z = log_g.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.lr * 0.1)
            for _ in range(self.steps):
                opt.zero_grad()
                self._objective(z, log_g.detach(), targets).backward()
                opt.step()
        return F.log_softmax(z.detach(), dim=1)

    @staticmethod
    def _objective(z: Tensor, log_g: Tensor, targets: list) -> Tensor:
        log_q = F.log_softmax(z, dim=1)
        total = (log_g.exp() * (log_g - log_q)).sum()
        for p_m, member, active in targets:
            q = log_q.exp()
            q_m = torch.cat([q[:, member], q[:, ~member].sum(dim=1, keepdim=True)], dim=1)
            kl = (p_m * (p_m.clamp(min=1e-12).log() - q_m.clamp(min=1e-12).log())).sum(dim=1)
            total = total + (active * kl).sum()
        return total
