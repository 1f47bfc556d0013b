"""Saved models are ``(name, kwargs, state_dict)`` so they rebuild by name; loaded with weights_only."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.atomic import atomic_torch_save
from edgekd.errors import EdgekdError
from edgekd.models.registry import build_model

FORMAT = "edgekd-model/1"


def _plain(v: Any) -> Any:
    """kwargs are stored as plain Python values (tuples -> lists) so weights_only loading accepts them."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def save_model(
    path: str | Path, model: nn.Module, name: str, kwargs: dict[str, Any], meta: dict[str, Any] | None = None
) -> Path:
    """Atomically save a model with what is needed to rebuild it."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {
        "format": FORMAT,
        "name": name,
        "kwargs": _plain(kwargs),
        "state_dict": state,
        "meta": _plain(meta or {}),
    }
    return atomic_torch_save(path, obj)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) with a one-line error for bad files."""
    path = Path(path)
    if not path.exists():
        raise EdgekdError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        IndexError,
        KeyError,
        TypeError,
    ) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgekdError(
            f"{path}: corrupt or not an edgekd checkpoint ({first[:120]}); re-create it with `edgekd train`"
        ) from None
    return obj


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path``. Returns ``(model in eval mode, record without state_dict)``."""
    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise EdgekdError(f"{path}: not an edgekd model file (expected format {FORMAT}); save it with edgekd")
    model = build_model(obj["name"], **obj["kwargs"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise EdgekdError(
            f"{path}: weights do not match model {obj['name']!r} ({str(e).splitlines()[0]})"
        ) from None
    model.eval()
    record = {k: v for k, v in obj.items() if k != "state_dict"}
    return model, record
