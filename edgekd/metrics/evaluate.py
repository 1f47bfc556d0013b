"""A network on a data set: top-1 accuracy and cross-entropy, or the reconstruction error and its AUC."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.data import ArrayDataset


def hard_labels(y: Tensor) -> Tensor:
    """Class labels of a batch: mixed label distributions (mixup, cutmix) count as their arg-max."""
    return y.argmax(1) if y.dim() == 2 else y


def reconstruction_error(output: Tensor, x: Tensor) -> Tensor:
    """Per-sample anomaly score: ``mean over features of (f(x) - x)^2``, shape ``(N,)``."""
    return (output - x).pow(2).flatten(1).mean(dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ArrayDataset, batch_size: int = 1024, task: str = "classification",
    device: torch.device | str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """Classification: top-1 accuracy, error count and mean CE. Reconstruction: mean reconstruction error
    (the per-sample anomaly score) and, when the labels hold both normal (0) and anomalous (1) samples, the
    ROC AUC of that score."""
    if len(data) == 0:
        return {}
    was_training = model.training
    model.eval()
    try:
        if task == "reconstruction":
            return _reconstruction(model, data, batch_size, device)
        return _classification(model, data, batch_size, device)
    finally:
        model.train(was_training)


def _reconstruction(model: nn.Module, data: ArrayDataset, batch_size: int, device: Any) -> dict[str, float]:
    scores = []
    for i in range(0, len(data), batch_size):
        xb = torch.from_numpy(data.x[i : i + batch_size]).to(device)
        scores.append(reconstruction_error(model(xb).float(), xb).cpu())
    score = torch.cat(scores).numpy()
    out = {"recon_error": float(score.mean()), "loss": float(score.mean())}
    labels = np.asarray(data.y)
    if set(np.unique(labels)) == {0, 1}:
        from edgekd.metrics.anomaly import roc_auc  # lazily: it still loads edgekd.profile

        out["auc"] = roc_auc(score, labels)
    return out


def _classification(model: nn.Module, data: ArrayDataset, batch_size: int, device: Any) -> dict[str, float]:
    n, correct, loss = len(data), 0, 0.0
    for i in range(0, n, batch_size):
        xb = torch.from_numpy(data.x[i : i + batch_size]).to(device)
        yb = torch.from_numpy(data.y[i : i + batch_size]).to(device)
        logits = model(xb).float()
        loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return {"accuracy": correct / n, "errors": n - correct, "loss": loss / n}
