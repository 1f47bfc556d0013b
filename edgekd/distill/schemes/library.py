"""Helpers shared by schemes that build teachers out of saved networks (a library of trained models)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.schemes.base import SchemeContext
from edgekd.errors import EdgekdError
from edgekd.models import load_model, save_model
from edgekd.models.ensemble import WeightedEnsemble
from edgekd.recipe import SchemeConfig
from edgekd.runfolder import RunFolder


def load_members(paths: Sequence[str], root: Path) -> list[tuple[nn.Module, dict[str, Any], Path]]:
    """Each run folder or checkpoint of ``paths`` loaded; relative paths are looked up in the runs folder
    holding ``root``."""
    out = []
    for p in paths:
        f = RunFolder.resolve_model(p, root.parent)
        model, record = load_model(f)
        out.append((model, record, f))
    return out


@torch.no_grad()
def log_probs(model: nn.Module, x: np.ndarray, batch: int = 1024) -> torch.Tensor:
    """``log softmax`` of the model's outputs on ``x`` (eval mode, batched), shape ``(N, C)``."""
    model.eval()
    return torch.cat([F.log_softmax(model(torch.from_numpy(x[i : i + batch])).float(), dim=1)
                      for i in range(0, len(x), batch)])  # fmt: skip


def member_spec(record: dict[str, Any]) -> dict[str, Any]:
    return {"name": record["name"], "kwargs": dict(record.get("kwargs", {}))}


def save_ensemble(
    path: Path, members: list[tuple[nn.Module, dict[str, Any]]], weights: Sequence[float], splits: Any,
    combine: str = "mean-probs",
) -> Path:  # fmt: skip
    """Save the weighted ensemble of ``members`` as one rebuildable ``ensemble`` model file."""
    kwargs = {"members": [member_spec(r) for _, r in members], "weights": [float(w) for w in weights],
              "combine": combine, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}  # fmt: skip
    ens = WeightedEnsemble(**kwargs)
    for dst, (src, _) in zip(ens.members, members):
        dst.load_state_dict(src.state_dict())
    return save_model(path, ens, "ensemble", kwargs, meta={"weights": list(weights)})


def need_val(splits: Any, scheme: str) -> None:
    if len(splits.val) == 0:
        raise EdgekdError(f"scheme {scheme}: needs a validation split; set data.val_fraction > 0")


def train_student(ctx: SchemeContext, teacher: Path) -> list[RunFolder]:
    """The recipe's own method trains ``root/student`` with ``teacher``, the model file the scheme built."""
    recipe = replace(ctx.recipe, name="student", scheme=SchemeConfig())
    return [ctx.train_once(recipe, ctx.root / "student", str(teacher))]
