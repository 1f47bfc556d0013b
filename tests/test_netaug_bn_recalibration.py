"""NetAug's reference recipe on the engine: augmentation stops after ``aug_fraction`` of the epochs, then
the base model's BN statistics are re-estimated on the training images before export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.data import ArrayDataset
from edgekd.distill.methods import build_method
from edgekd.distill.train import Stage, Trainer
from edgekd.models import build_model
from edgekd.recipe import TrainConfig
from edgekd.runfolder import RunFolder

KW = {"input_shape": [1, 12, 12], "num_classes": 4, "channels": [4, 8, 8], "depthwise": False}


def _bn_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every BN layer of ``model`` on ``x`` (train-mode batch statistics are taken from it)."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]  # fmt: skip
    with torch.no_grad():
        model.eval()
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_engine_stops_augmentation_half_way_and_recalibrates_bn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 96  # fewer than one recalibration batch: the statistics are exact batch moments
    x = rng.normal(size=(n, 1, 12, 12)).astype(np.float32) * 2.0 + 0.5
    y = rng.integers(0, 4, size=n).astype(np.int64)
    m = build_method("netaug", build_model("cnn", **KW), None, {"aug_fraction": 0.5, "alpha": 1.0})
    cfg = TrainConfig(epochs=4, batch_size=32, optimizer="sgd", lr=0.2, threads=1, device="cpu")
    fit = Trainer([Stage("train", m, cfg)], None, RunFolder(tmp_path), seed=0, progress=False).fit(
        ArrayDataset(x, y)
    )
    # the aux (augmented) loss is trained in epochs 1-2 only
    assert [("train_aug" in r) for r in fit.history] == [True, True, False, False]
    assert all(r["train_aug"] > 0 for r in fit.history[:2])
    plain = m.export_student()
    xt = torch.from_numpy(x)
    # every BN of the exported model holds the mean / unbiased variance of its input over the training
    # images, computed with the final weights (not the momentum-averaged stale statistics of training)
    bns = [b for b in plain.modules() if isinstance(b, nn.BatchNorm2d)]
    assert len(bns) == 3
    inputs = _bn_inputs(plain, xt)
    for bn, a in zip(bns, inputs):
        mean = a.mean(dim=(0, 2, 3))
        var = a.var(dim=(0, 2, 3), unbiased=True)
        assert torch.allclose(bn.running_mean, mean, atol=1e-4), (bn.running_mean, mean)
        assert torch.allclose(bn.running_var, var, rtol=1e-3, atol=1e-5)
    # so eval-mode outputs equal train-mode (batch-statistics) outputs on the same images
    with torch.no_grad():
        out_eval = plain.eval()(xt)
        out_batch = plain.train()(xt)
    assert torch.allclose(out_eval, out_batch, atol=2e-2), (out_eval - out_batch).abs().max()


def test_recalibration_replaces_stale_statistics() -> None:
    torch.manual_seed(0)
    m = build_method("netaug", build_model("cnn", **KW), None, {})
    x = torch.randn(64, 1, 12, 12) * 3.0 + 1.0
    m.train()
    m.forward_train(torch.randn(8, 1, 12, 12), torch.zeros(8, dtype=torch.long))  # stats of other data
    stale = m.export_student()
    first = next(b for b in stale.modules() if isinstance(b, nn.BatchNorm2d))
    true_mean = _bn_inputs(stale, x)[0].mean(dim=(0, 2, 3))
    assert (first.running_mean - true_mean).abs().max() > 0.1  # one momentum step: far from the truth
    m.on_train_end(x)
    fresh = next(b for b in m.export_student().modules() if isinstance(b, nn.BatchNorm2d))
    assert torch.allclose(fresh.running_mean, true_mean, atol=1e-4)
    assert not m.supernet.training  # left in eval mode, base configuration
    assert m.supernet.config == ("base",)
