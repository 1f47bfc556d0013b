"""edgekd.data.fewshot sampling and the wasserstein-kd loss (Kong et al., AAAI 2020)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from edgekd.cli import main
from edgekd.data import load_data
from edgekd.data.fewshot import apply_few_shot, few_shot_indices
from edgekd.distill.losses import LOSSES, kd_loss
from edgekd.distill.losses.logits import kd_per_example
from edgekd.distill.losses.wasserstein import wasserstein_kd_loss
from edgekd.distill.methods import build_method
from edgekd.errors import EdgekdError
from edgekd.models import build_model, save_model
from edgekd.recipe import FewShotConfig


def _cli_ok(argv: list[str]) -> None:
    """Run the CLI; success may return or exit with code 0."""
    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), e.code


SMALL_CNN = {"channels": [4, 8], "depthwise": False}


# ---------------------------------------------------------------------------------------------
# sampler


def _labels() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.permutation(np.repeat(np.arange(5), [40, 30, 50, 20, 60]))


def test_per_class_counts_are_exact_and_seeded() -> None:
    y = _labels()
    idx = few_shot_indices(y, 7, per_class=True, seed=3)
    assert np.array_equal(np.bincount(y[idx]), [7] * 5)
    assert len(np.unique(idx)) == len(idx) == 35
    assert np.array_equal(idx, few_shot_indices(y, 7, per_class=True, seed=3))
    assert not np.array_equal(idx, few_shot_indices(y, 7, per_class=True, seed=4))


def test_total_size_is_stratified() -> None:
    y = _labels()  # class frequencies 40/30/50/20/60 of 200
    idx = few_shot_indices(y, 50, seed=0)
    assert len(idx) == 50 and len(np.unique(idx)) == 50
    counts = np.bincount(y[idx], minlength=5)
    assert counts.sum() == 50 and counts.min() >= 1
    assert np.abs(counts - 50 * np.array([40, 30, 50, 20, 60]) / 200).max() <= 1.0
    small = few_shot_indices(y, 5, seed=0)
    assert np.array_equal(np.bincount(y[small], minlength=5), [1] * 5)


def test_sampler_errors_name_the_key() -> None:
    y = _labels()
    with pytest.raises(EdgekdError, match=r"data\.few_shot\.size.*larger"):
        few_shot_indices(y, 201)
    with pytest.raises(EdgekdError, match=r"data\.few_shot\.size.*smaller than the number of classes"):
        few_shot_indices(y, 4)
    with pytest.raises(EdgekdError, match=r"data\.few_shot\.size.*per class.*class 3"):
        few_shot_indices(y, 21, per_class=True)


def test_apply_few_shot_keeps_exactly_the_sampled_rows() -> None:
    splits = load_data("digits", seed=0)
    cfg = FewShotConfig(size=3, per_class=True, seed=5)
    out = apply_few_shot(splits, cfg)
    idx = few_shot_indices(splits.train.y, 3, per_class=True, seed=5)
    assert np.array_equal(out.train.x, splits.train.x[idx])
    assert np.array_equal(out.train.y, splits.train.y[idx])
    assert np.array_equal(np.bincount(out.train.y), [3] * 10)
    # val and test are the same objects, untouched
    assert out.val is splits.val and out.test is splits.test
    assert out.info["few_shot"]["indices"] == idx.tolist()


def test_runner_gives_the_engine_only_the_sampled_rows(tmp_path: Path, monkeypatch) -> None:
    from edgekd.distill import runner, train
    from edgekd.recipe import recipe_from_dict

    seen = {}
    real_fit = train.Trainer.fit

    def spy(self, train, val=None, test=None, **kw):
        seen["train"] = (train.x.copy(), train.y.copy())
        return real_fit(self, train, val, test, **kw)

    monkeypatch.setattr(runner.Trainer, "fit", spy)
    recipe = recipe_from_dict(
        {
            "name": "fs",
            "data": {"name": "digits", "few_shot": {"size": 30, "seed": 2}},
            "model": {"name": "cnn", "kwargs": SMALL_CNN},
            "train": {"epochs": 1, "batch_size": 16},
        }
    )
    runner.run_training(recipe, tmp_path, distill=False, progress=False)
    full = load_data("digits", seed=0)
    idx = few_shot_indices(full.train.y, 30, seed=2)
    assert np.array_equal(seen["train"][0], full.train.x[idx])
    assert np.array_equal(seen["train"][1], full.train.y[idx])


# ---------------------------------------------------------------------------------------------
# Wasserstein KD loss


class _Tiny(nn.Module):
    """A smooth model with no cross-example interaction (float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def test_gradient_penalty_matches_finite_differences() -> None:
    torch.manual_seed(0)
    model = _Tiny().double()
    x = torch.randn(4, 6, dtype=torch.float64)
    t_logits = torch.randn(4, 3, dtype=torch.float64)
    eps, temp, h = 0.7, 2.0, 1e-6

    def per_example(xx: torch.Tensor) -> torch.Tensor:
        return kd_per_example(model(xx), t_logits, temp)

    # finite-difference input gradient of each example's own loss
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                xp, xm = x.clone(), x.clone()
                xp[i, j] += h
                xm[i, j] -= h
                fd[i, j] = (per_example(xp)[i] - per_example(xm)[i]) / (2 * h)
    expected_gp = eps * fd.norm(dim=1).mean()
    expected_base = per_example(x).mean()

    xr = x.clone().requires_grad_(True)
    base, gp = wasserstein_kd_loss(model(xr), t_logits, xr, eps=eps, temperature=temp, return_terms=True)
    assert torch.allclose(base, expected_base, atol=1e-10)
    assert torch.allclose(gp, expected_gp, rtol=1e-6, atol=1e-9)
    total = wasserstein_kd_loss(model(xr), t_logits, xr, eps=eps, temperature=temp)
    assert torch.allclose(total, expected_base + expected_gp, rtol=1e-6)

    # double back-propagation: d L_W / d theta against finite differences of L_W in one weight
    model.zero_grad()
    total.backward()
    w = model.a.weight
    analytic = w.grad[1, 2].item()
    with torch.no_grad():
        w[1, 2] += h
    xr1 = x.clone().requires_grad_(True)
    plus = wasserstein_kd_loss(model(xr1), t_logits, xr1, eps=eps, temperature=temp).item()
    with torch.no_grad():
        w[1, 2] -= 2 * h
    xr2 = x.clone().requires_grad_(True)
    minus = wasserstein_kd_loss(model(xr2), t_logits, xr2, eps=eps, temperature=temp).item()
    assert analytic == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-9)


def test_wasserstein_loss_registered_and_eps_zero_is_kd() -> None:
    assert LOSSES.get("wasserstein-kd").input_grad and LOSSES.get("wasserstein-kd").paper.startswith("Kong")
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(8, 6, requires_grad=True)
    t = torch.randn(8, 3)
    out = model(x)
    assert torch.allclose(wasserstein_kd_loss(out, t, x, eps=0.0), kd_loss(out, t))


def test_method_terms_and_training_step() -> None:
    torch.manual_seed(0)
    student = build_model("cnn", input_shape=[1, 8, 8], num_classes=10, **SMALL_CNN)
    teacher = build_model("cnn", input_shape=[1, 8, 8], num_classes=10, channels=[8, 8], depthwise=False)
    m = build_method("wasserstein-kd", student, teacher, {"eps": 0.5, "alpha": 0.9})
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    _, terms = m.forward_train(x, y)
    assert set(terms) == {"kd", "grad_penalty", "ce"} and float(terms["grad_penalty"].detach()) > 0
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(EdgekdError, match=r"method\.params\.eps"):
        build_method("wasserstein-kd", student, teacher, {"eps": -0.1})


# ---------------------------------------------------------------------------------------------
# CLI: a real run and the bad-input errors


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.manual_seed(0)
    kw = {"input_shape": [1, 8, 8], "num_classes": 10, "channels": [8, 8], "depthwise": False}
    save_model(path, build_model("cnn", **kw), "cnn", kw)
    return path


def _recipe(tmp_path: Path, teacher: Path, **extra) -> Path:
    data = {
        "name": "wkd",
        "data": {"name": "digits", "few_shot": {"size": 40, "seed": 1}},
        "model": {"name": "cnn", "kwargs": SMALL_CNN},
        "teacher": {"path": str(teacher)},
        "method": {"name": "wasserstein-kd", "params": {"eps": 0.1}},
        "train": {"epochs": 2, "batch_size": 16},
    }
    data.update(extra)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_cli_distill_wasserstein_fewshot(tmp_path: Path, digits_teacher: Path) -> None:
    recipe = _recipe(tmp_path, digits_teacher)
    _cli_ok(["distill", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q"])
    run = tmp_path / "runs" / "wkd"
    assert (run / "student.pt").exists()
    import json

    info = json.loads((run / "data.json").read_text())
    assert info["sizes"]["train"] == 40 and len(info["few_shot"]["indices"]) == 40


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.few_shot.size=100000", "data.few_shot.size"),
        ("data.few_shot.size=5", "data.few_shot.size"),
        ("data.few_shot.per_class=true", "data.few_shot.size"),  # 40 per class > smallest class
        ("method.params.eps=-0.5", "method.params.eps"),
    ],
)
def test_cli_bad_input_exit_2(tmp_path: Path, digits_teacher: Path, capsys, override: str, key: str) -> None:
    recipe = _recipe(tmp_path, digits_teacher)
    if override.startswith("data.few_shot.per_class"):
        extra = ["--set", "data.few_shot.size=400"]
    else:
        extra = []
    with pytest.raises(SystemExit) as exc:
        main(["distill", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q", "--set", override, *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and key in err and "\n" not in err
