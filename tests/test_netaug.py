"""edgekd.distill.methods.netaug (Cai et al., ICLR 2022): weight sharing, step, BN recalibration, CLI.

NetAug's reference recipe on the engine: augmentation stops after ``aug_fraction`` of the epochs, then the
base model's BN statistics are re-estimated on the training images before export.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _train import interrupt_and_resume
from torch import nn

from edgekd.cli import main
from edgekd.data import ArrayDataset
from edgekd.distill.methods import build_method
from edgekd.distill.train import Stage, Trainer
from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model, save_model
from edgekd.models.cnn import TinyCNN
from edgekd.models.dynamic import DynamicBatchNorm2d, DynamicConv2d, SuperNet
from edgekd.recipe import TrainConfig
from edgekd.runfolder import RunFolder


def _cli_ok(argv: list[str]) -> None:
    """Run the CLI; success may return or exit with code 0."""
    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), e.code


KW = {"input_shape": [1, 12, 12], "num_classes": 5, "channels": [4, 8, 8]}


def _student(depthwise: bool, seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return build_model("cnn", depthwise=depthwise, **KW)


def _slice(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return t[tuple(slice(0, s) for s in shape)]


@pytest.mark.parametrize("depthwise", [True, False])
def test_base_is_leading_slice_and_export_matches(depthwise: bool) -> None:
    base = _student(depthwise)
    init = {k: v.clone() for k, v in base.state_dict().items()}
    net = SuperNet(base, [1.0, 1.5, 2.0])
    wide = net.net.state_dict()
    # the wide layers are larger and their leading slices are the base model's initial weights
    assert sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in base.parameters())
    for k, v in init.items():
        assert all(a >= b for a, b in zip(wide[k].shape, v.shape))
        assert torch.equal(_slice(wide[k], v.shape), v), k
    # train a little (base + augmented), then the exported plain model equals the base mode
    m = build_method("netaug", _student(depthwise), None, {"width_mults": [1.0, 1.5, 2.0]})
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1)
    x, y = torch.randn(32, 1, 12, 12), torch.randint(0, 5, (32,))
    m.train()
    for _ in range(3):
        _, terms = m.forward_train(x, y)
        assert set(terms) == {"base", "aug"}
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    m.on_train_end(x)
    plain = m.export_student()
    assert type(plain) is TinyCNN
    assert not any(isinstance(mod, (DynamicConv2d, DynamicBatchNorm2d)) for mod in plain.modules())
    wide = m.supernet.net.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(_slice(wide[k], v.shape), v), k
    m.supernet.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), m.supernet(x), atol=1e-6)
        assert torch.allclose(plain(x), m.forward_test(x), atol=1e-6)


def test_augmented_step_changes_shared_base_slice() -> None:
    net = SuperNet(_student(True), [1.0, 2.0])
    net.train()
    net.set_config([2.0, 2.0, 2.0])
    pw = net.net.features[1][1][0]  # pointwise conv of the first depthwise-separable block
    assert pw.active_out == 16 and pw.weight.shape[0] == 16
    before = pw.weight.detach().clone()
    bn_before = net.net.features[0][1].running_mean.clone()
    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 5, (8,))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    grad = pw.weight.grad
    assert grad[:8, :4].abs().sum() > 0  # the base slice receives gradient from the wide model
    assert grad[8:].abs().sum() > 0  # and so do the extra channels
    opt.step()
    after = pw.weight.detach()
    assert not torch.equal(after[:8, :4], before[:8, :4])
    # augmented passes use batch statistics and leave the running ones alone
    assert torch.equal(net.net.features[0][1].running_mean, bn_before)
    net.set_base()
    net(x)
    assert not torch.equal(net.net.features[0][1].running_mean[:4], bn_before[:4])
    assert torch.equal(net.net.features[0][1].running_mean[4:], bn_before[4:])


def test_sampled_configs_are_augmented_and_cached() -> None:
    net = SuperNet(_student(False), [1.0, 1.8, 2.6])
    rng = random.Random(0)
    base_outs = [m.active_out for m in net.net.modules() if isinstance(m, DynamicConv2d)]
    for _ in range(10):
        cfg = net.sample(rng)
        outs = [m.active_out for m in net.net.modules() if isinstance(m, DynamicConv2d)]
        assert outs != base_outs and all(o >= b for o, b in zip(outs, base_outs))
        assert all(mult in (1.0, 1.8, 2.6) for mult in cfg[0])
        net(torch.randn(2, 1, 12, 12))
    net.set_base()
    assert [m.active_out for m in net.net.modules() if isinstance(m, DynamicConv2d)] == base_outs


def test_augmentation_stops_after_fraction_and_kd_with_teacher() -> None:
    torch.manual_seed(0)
    teacher = build_model("cnn", depthwise=False, **{**KW, "channels": [8, 8, 8]})
    m = build_method("netaug", _student(True), teacher, {"aug_fraction": 0.5, "kd_alpha": 1.0})
    x, y = torch.randn(4, 1, 12, 12), torch.randint(0, 5, (4,))
    m.on_epoch_start(0, 4)
    _, terms = m.forward_train(x, y)
    assert set(terms) == {"base", "aug"}
    from edgekd.distill.losses import kd_loss

    with torch.no_grad():
        expected = kd_loss(m.supernet(x), teacher(x))
    assert torch.allclose(terms["base"].detach(), expected, atol=1e-5)
    m.on_epoch_start(2, 4)
    _, terms = m.forward_train(x, y)
    assert set(terms) == {"base"}


def test_bad_width_multiplier() -> None:
    with pytest.raises(EdgekdError, match=r"method\.params\.width_mults"):
        build_method("netaug", _student(True), None, {"width_mults": [0.5, 1.0]})


@pytest.mark.slow
@pytest.mark.parametrize("depthwise", [True, False])
def test_cli_train_netaug_exports_plain_model(tmp_path: Path, depthwise: bool) -> None:
    recipe = {
        "name": "na",
        "data": {"name": "digits"},
        "model": {"name": "cnn", "kwargs": {"channels": [4, 8], "depthwise": depthwise}},
        "method": {"name": "netaug", "params": {"width_mults": [1.0, 2.0]}},
        "train": {"epochs": 1, "batch_size": 64},
    }
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    _cli_ok(["train", str(p), "--runs-dir", str(tmp_path), "-q"])
    model, record = load_model(tmp_path / "na" / "model.pt")
    assert type(model) is TinyCNN and record["name"] == "cnn"
    # round trip through save_model works unchanged
    save_model(tmp_path / "again.pt", model, "cnn", record["kwargs"])
    again, _ = load_model(tmp_path / "again.pt")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_cli_width_multiplier_below_one_exit_2(tmp_path: Path, capsys) -> None:
    recipe = {
        "name": "na",
        "data": {"name": "digits"},
        "model": {"name": "cnn", "kwargs": {"channels": [4, 8]}},
        "method": {"name": "netaug", "params": {"width_mults": [1.0, 1.5]}},
        "train": {"epochs": 1},
    }
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train",
                str(p),
                "--runs-dir",
                str(tmp_path),
                "-q",
                "--set",
                "method.params.width_mults=[0.5,1.0]",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "method.params.width_mults" in err and "\n" not in err


def test_mbv2_tiny_expand_ratios_and_export() -> None:
    from edgekd.models.mobilenetv2 import MobileNetV2Tiny

    torch.manual_seed(0)
    kw = {"input_shape": [1, 12, 12], "num_classes": 5, "stem_channels": 4, "last_channels": 16,
          "blocks": [[1, 4, 1, 1], [4, 8, 2, 2]]}  # fmt: skip
    m = build_method("netaug", build_model("mbv2-tiny", **kw), None, {"expand_ratios": [4, 6]})
    net = m.supernet
    net.set_config([2.6, 2.6, 2.6, 2.6], [6.0, 6.0, 6.0])
    expand_conv = net.net.features[2].conv[0][0]  # 1x1 expand of the first stride-2 block
    assert expand_conv.active_out == expand_conv.out_channels > 4 * 4  # widest: wider input x expand 6
    net.set_base()
    assert expand_conv.active_out == 4 * 4  # base: 4 input channels x expand 4
    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 5, (8,))
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1)
    m.train()
    _, terms = m.forward_train(x, y)
    sum(terms.values()).backward()
    opt.step()
    m.on_train_end(x)
    plain = m.export_student()
    assert type(plain) is MobileNetV2Tiny
    with torch.no_grad():
        assert torch.allclose(plain(x), net(x), atol=1e-6)


@pytest.mark.slow
def test_netaug_resume_is_exact(tmp_path):
    """The augmented-width sampler's RNG is checkpointed: interrupted + resumed == uninterrupted."""
    import torch as _torch

    from edgekd.distill.runner import run_training
    from edgekd.models import load_model
    from edgekd.recipe import recipe_from_dict

    r = recipe_from_dict(
        {
            "name": "na",
            "data": {"name": "digits"},
            "model": {"name": "cnn", "kwargs": {"channels": [4, 8], "depthwise": False}},
            "method": {"name": "netaug", "params": {"alpha": 1.0}},
            "train": {"epochs": 3, "batch_size": 128, "lr": 0.05},
        }
    )
    full = run_training(r, tmp_path / "a", distill=False, progress=False)
    resumed = interrupt_and_resume(r, tmp_path / "b", distill=False)
    a, _ = load_model(full.model)
    b, _ = load_model(resumed.model)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert _torch.equal(va, vb), k


# --- BN recalibration: augmentation stops after aug_fraction, then BN statistics are re-estimated ---
BN_KW = {"input_shape": [1, 12, 12], "num_classes": 4, "channels": [4, 8, 8], "depthwise": False}


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
    m = build_method("netaug", build_model("cnn", **BN_KW), None, {"aug_fraction": 0.5, "alpha": 1.0})
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
    m = build_method("netaug", build_model("cnn", **BN_KW), None, {})
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
