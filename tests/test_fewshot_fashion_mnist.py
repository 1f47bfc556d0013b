"""benchmarks/fewshot_fashion_mnist.py: its VGG models, step planning and feature methods.

The VGG student/teacher of the few-shot benchmark, and the benchmark's step planning and two-stage feature
methods (FitNet, activation boundaries) on edgekd's engine. Small models, a few steps.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fewshot_fashion_mnist as bench  # noqa: E402

from edgekd.data import ArrayDataset  # noqa: E402
from edgekd.distill.features import tap_features  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.recipe import TrainConfig  # noqa: E402


def test_vgg_layout_and_feature_paths() -> None:
    s = build_model("vgg", stages=[[8], [16, 16], [32]])
    t = build_model("vgg", stages=[[32], [64, 64], [128, 128]])
    x = torch.randn(3, 1, 28, 28)
    paths = ["features.0", "features.1", "features.2", "features.1.1.1"]
    with tap_features(s, paths) as fs, tap_features(t, paths) as ft:
        assert s(x).shape == (3, 10) and t(x).shape == (3, 10)
    # same spatial sizes at every stage (14, 7, 3), widths differ: an adapter maps channels only
    assert [fs[p].shape[2:] for p in paths] == [ft[p].shape[2:] for p in paths]
    assert [tuple(fs[p].shape[1:]) for p in paths[:3]] == [(8, 14, 14), (16, 7, 7), (32, 3, 3)]
    assert isinstance(dict(s.named_modules())["features.1.1.1"], nn.BatchNorm2d)  # pre-ReLU, for AB
    assert fs["features.1.1.1"].min() < 0  # pre-activation: negative values survive
    ops = {type(m) for m in s.modules()} - {nn.Sequential, type(s)}
    assert ops <= {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
                   nn.Identity, nn.Linear}  # fmt: skip
    with pytest.raises(ValueError, match="stages"):
        build_model("vgg", stages=[[8], []])


@pytest.mark.parametrize(
    ("n", "bs", "steps"), [(50, 50, 100), (100, 64, 100), (5000, 64, 250), (500, 64, 150)]
)
def test_plan_epochs_sees_every_example(n: int, bs: int, steps: int) -> None:
    idx, epochs = bench.plan_epochs(n, bs, steps, seed=0)
    per_epoch = len(idx)
    # every example is trained on in every epoch; about `steps` batches in all
    assert set(idx.tolist()) == set(range(n))
    done = epochs * -(-per_epoch // bs)
    assert abs(done - steps) <= max(epochs, 0.1 * steps)
    if n == 5000:  # more data than VIRTUAL_EPOCHS passes allow: the set itself, ~3 epochs
        assert per_epoch == n and epochs == 3


@pytest.mark.parametrize("method", ["ab", "fitnet"])
def test_feature_method_trains_two_stages_and_moves_features(method: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    teacher = build_model("vgg", stages=[[8], [16, 16], [16]]).eval()
    student = build_model("vgg", stages=[[4], [8, 8], [8]])
    cfg = TrainConfig(optimizer="adam", lr=1e-2, batch_size=20, schedule="cosine")
    params = {"temperature": 4.0, "alpha": 0.9}
    make = bench.build_distiller(method, student, teacher, params, torch.from_numpy(x[:2]), cfg)
    stages = make(8)
    assert [s.cfg.epochs for s in stages] == [2, 6] and stages[1].name == "kd"
    first = stages[0].distiller
    path = bench.FEATURE_METHODS[method]["student"]
    xt = torch.from_numpy(x)

    def feature_loss() -> float:
        first.train()
        with torch.no_grad():
            _, terms = first.forward_train(xt, torch.from_numpy(y))
        return float(sum(terms.values()))

    before = feature_loss()
    only_first = [replace(stages[0], cfg=replace(stages[0].cfg, epochs=e)) for e in (6,)]
    out = bench.train_steps(lambda e: only_first, ArrayDataset(x, y), cfg, steps=12, seed=0)
    assert out["steps"] == 12 and out["student"] is student
    assert feature_loss() < 0.9 * before, f"{method}: the feature stage did not lower its loss on {path}"
    with pytest.raises(ValueError, match="at least 2 epochs"):
        make(1)
