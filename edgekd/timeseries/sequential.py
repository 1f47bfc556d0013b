"""The noisy sequential (Born-Again) reconstruction objective for autoencoder generations.

Student generation ``i`` minimises::

    (1 - a) * MSE(x, f_i(x_noise)) + a * MSE(f_i(x), f_{i-1}(x))

where ``x_noise`` is ``x`` with Gaussian noise N(0, sigma^2) (sigma = 0.05) added to a fraction
``p`` of the samples of the mini-batch and ``f_{i-1}(x)`` is the previous generation's (or an
ensemble's mean) reconstruction of the clean window, treated as a constant. Generation 1 of a
chain (no previous network) uses ``a = 0``: a denoising autoencoder.

Pure functions: the caller owns the models, the optimiser and the ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from edgekd.errors import EdgekdError

DEFAULT_SIGMA = 0.05


def noisy_fraction(
    x: torch.Tensor, fraction: float, sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add N(0, sigma^2) noise to ``round(fraction * batch)`` samples picked at random.

    Draw order (fixed, so a test can replay it): ``torch.randperm(batch, generator=generator)``
    (the first ``round(fraction * batch)`` indices get noise), then one
    ``torch.randn(x.shape, generator=generator)`` for the whole batch. Both on the CPU, so the
    draws do not depend on the device; the noise is moved to ``x``'s device.
    Returns ``(x_noise, mask)`` where ``mask`` (bool, ``(batch,)``) marks the noisy samples.
    """
    if not 0.0 <= fraction <= 1.0:
        raise EdgekdError(f"noise fraction p={fraction} must be in [0, 1]")
    if sigma < 0:
        raise EdgekdError(f"noise sigma={sigma} must be >= 0")
    batch = x.shape[0]
    perm = torch.randperm(batch, generator=generator)
    mask = torch.zeros(batch, dtype=torch.bool)
    mask[perm[: int(round(fraction * batch))]] = True
    noise = torch.randn(tuple(x.shape), generator=generator, dtype=x.dtype)
    noise = noise * mask.view(-1, *([1] * (x.dim() - 1))).to(noise.dtype) * sigma
    return x + noise.to(x.device), mask.to(x.device)


def noisy_sequential_loss(
    student: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    previous: torch.Tensor | None,
    *,
    alpha: float,
    fraction: float,
    generator: torch.Generator,
    sigma: float = DEFAULT_SIGMA,
) -> torch.Tensor:
    """``(1-alpha) * MSE(x, f(x_noise)) + alpha * MSE(f(x), previous)`` for one mini-batch.

    ``previous`` is ``f_{i-1}(x)`` (detached here); ``None`` is allowed only with ``alpha == 0``.
    MSE is the mean over every element (batch, steps, features).
    """
    if not 0.0 <= alpha <= 1.0:
        raise EdgekdError(f"sequential loss: alpha={alpha} must be in [0, 1]")
    if previous is None and alpha > 0:
        raise EdgekdError("sequential loss: alpha > 0 needs the previous generation's reconstruction")
    x_noise, _ = noisy_fraction(x, fraction, sigma, generator)
    loss = (1.0 - alpha) * F.mse_loss(student(x_noise), x)
    if alpha > 0:
        if previous.shape != x.shape:
            raise EdgekdError(
                f"sequential loss: previous reconstruction {tuple(previous.shape)} != input {tuple(x.shape)}"
            )
        loss = loss + alpha * F.mse_loss(student(x), previous.detach())
    return loss


@torch.no_grad()
def ensemble_reconstruction(
    models: Sequence[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor
) -> torch.Tensor:
    """The mean reconstruction of several generations: the teacher of the next student."""
    if not models:
        raise EdgekdError("ensemble_reconstruction: no models")
    return torch.stack([m(x) for m in models]).mean(dim=0)
