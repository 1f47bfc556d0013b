"""edgekd.distill.losses: Hinton KD and cross-entropy against hand-computed values; unknown names."""

import math

import pytest
import torch

from edgekd.distill.losses import LOSSES, cross_entropy, kd_loss


def _softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def _kd_by_hand(zs, zt, t):
    ps, pt = _softmax(zs, t), _softmax(zt, t)
    return t * t * sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))


@pytest.mark.parametrize("t", [1.0, 4.0, 20.0])
def test_kd_loss_matches_hand_computed_value(t):
    zs, zt = [1.0, 2.0, 0.5], [3.0, -1.0, 0.0]
    got = kd_loss(torch.tensor([zs]), torch.tensor([zt]), temperature=t).item()
    assert got == pytest.approx(_kd_by_hand(zs, zt, t), rel=1e-5)


def test_kd_loss_golden_value_and_t_squared_scaling():
    zs = torch.tensor([[1.0, 2.0, 0.5]])
    zt = torch.tensor([[3.0, -1.0, 0.0]])
    # KL at T=1 by hand: p_t = [0.93624, 0.01715, 0.04661], p_s = [0.23122, 0.62853, 0.14024] -> 1.30926 - 0.06177 - 0.05134
    assert kd_loss(zs, zt, 1.0).item() == pytest.approx(1.19615, abs=2e-4)
    # the loss is T^2 * KL(T): dividing by T^2 gives the plain KL at temperature T
    kl4 = kd_loss(zs, zt, 4.0).item() / 16.0
    assert kl4 == pytest.approx(
        _kd_by_hand([z / 4 for z in zs[0].tolist()], [z / 4 for z in zt[0].tolist()], 1.0), rel=1e-5
    )


def test_kd_loss_is_zero_for_identical_logits_and_batch_averaged():
    z = torch.randn(5, 10)
    assert kd_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.randn(1, 4), torch.randn(1, 4)
    c, d = torch.randn(1, 4), torch.randn(1, 4)
    both = kd_loss(torch.cat([a, c]), torch.cat([b, d]), 2.0).item()
    assert both == pytest.approx((kd_loss(a, b, 2.0).item() + kd_loss(c, d, 2.0).item()) / 2, rel=1e-5)


def test_kd_gradient_scale_is_independent_of_temperature_at_high_t():
    """Hinton: with the T^2 factor the soft-target gradient ~ (z_s - z_t) / N for large T."""
    zs = torch.tensor([[0.5, -0.2, 0.1]], requires_grad=True)
    zt = torch.tensor([[0.2, 0.3, -0.4]])
    kd_loss(zs, zt, 100.0).backward()
    expected = ((zs - zt) - (zs - zt).mean()).detach() / 3
    assert torch.allclose(zs.grad, expected, atol=2e-3)


def test_cross_entropy_golden_value():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(
        -math.log(_softmax([2, 0, -1])[0]), rel=1e-6
    )


def test_registry_lists_names_on_unknown_loss():
    from edgekd.errors import EdgekdError

    with pytest.raises(EdgekdError, match="valid names: .*kd"):
        LOSSES.get("nope")
