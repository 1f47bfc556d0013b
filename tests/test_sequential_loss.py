"""edgekd.timeseries.sequential: the noisy sequential (Born-Again) loss against hand values."""

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.timeseries.sequential import ensemble_reconstruction, noisy_fraction, noisy_sequential_loss


def _student(x):
    return 0.5 * x + 0.1  # any fixed map works; linear keeps the hand computation readable


def test_matches_hand_computation_with_replayed_generator():
    x = torch.arange(24, dtype=torch.float32).reshape(4, 3, 2) / 10
    prev = torch.full_like(x, 0.7)
    a, p, sigma = 0.3, 0.5, 0.05
    loss = noisy_sequential_loss(
        _student, x, prev, alpha=a, fraction=p, sigma=sigma, generator=torch.Generator().manual_seed(7)
    )
    # replay the documented draws: randperm picks round(0.5 * 4) = 2 noisy samples, then randn
    g = torch.Generator().manual_seed(7)
    noisy = torch.randperm(4, generator=g)[:2].tolist()
    z = torch.randn(4, 3, 2, generator=g)
    total_rec, total_kd = 0.0, 0.0
    for i in range(4):
        for j in range(3):
            for k in range(2):
                xv = x[i, j, k].item()
                xn = xv + (sigma * z[i, j, k].item() if i in noisy else 0.0)
                total_rec += (xv - (0.5 * xn + 0.1)) ** 2
                total_kd += ((0.5 * xv + 0.1) - 0.7) ** 2
    expect = (1 - a) * total_rec / 24 + a * total_kd / 24
    assert loss.item() == pytest.approx(expect, rel=1e-6)


def test_noise_goes_to_the_requested_fraction():
    x = torch.zeros(10, 5, 3)
    xn, mask = noisy_fraction(x, 0.3, 0.05, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == 3
    changed = (xn != 0).flatten(1).any(1)
    assert torch.equal(changed, mask)
    assert 0.02 < xn[mask].std().item() < 0.08  # sigma 0.05 over 45 values
    assert torch.equal(noisy_fraction(x, 0.0, 0.05, torch.Generator())[0], x)


def test_generation_one_and_gradients():
    x = torch.randn(6, 4, 2)
    w = torch.tensor(0.8, requires_grad=True)
    prev = torch.randn(6, 4, 2, requires_grad=True)
    plain = noisy_sequential_loss(
        lambda t: w * t, x, None, alpha=0.0, fraction=0.0, generator=torch.Generator()
    )
    assert plain.item() == pytest.approx(((0.8 * x - x) ** 2).mean().item(), rel=1e-6)
    loss = noisy_sequential_loss(
        lambda t: w * t, x, prev, alpha=1.0, fraction=1.0, generator=torch.Generator()
    )
    loss.backward()
    assert prev.grad is None and w.grad is not None  # the previous generation is a constant
    assert loss.item() == pytest.approx(((0.8 * x - prev) ** 2).mean().item(), rel=1e-6)


def test_ensemble_is_the_mean():
    x = torch.ones(2, 3, 1)
    out = ensemble_reconstruction([lambda t: t, lambda t: 3 * t, lambda t: 5 * t], x)
    assert torch.allclose(out, 3 * x)


def test_bad_arguments():
    x = torch.zeros(2, 3, 1)
    with pytest.raises(EdgekdError, match="previous generation"):
        noisy_sequential_loss(_student, x, None, alpha=0.5, fraction=0.1, generator=torch.Generator())
    with pytest.raises(EdgekdError, match=r"p=1.5"):
        noisy_sequential_loss(_student, x, None, alpha=0.0, fraction=1.5, generator=torch.Generator())
    with pytest.raises(EdgekdError, match="previous reconstruction"):
        noisy_sequential_loss(_student, x, x[:1], alpha=0.5, fraction=0.1, generator=torch.Generator())
