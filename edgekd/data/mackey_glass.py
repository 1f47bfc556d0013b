"""Mackey-Glass series: dx/dt = beta * x(t - tau) / (1 + x(t - tau)^n) - gamma * x(t).

Defaults: beta = 0.2, gamma = 0.1, n = 10, tau = 17 (the chaotic regime used in the forecasting
literature). Integration: classical 4th-order Runge-Kutta with step ``dt = 0.1`` time units; the
delayed value at a half step (t - tau + dt/2) is the mean of the two neighbouring grid values
(linear interpolation; tau / dt must be an integer). History: x(t) = x0 for t <= 0, with
``x0 = 1.2`` or, given a ``seed``, drawn uniformly from [0.5, 1.5). The first ``discard`` time
units (transient) are dropped, then one sample is kept every ``sample_every`` time units.
Deterministic: the same arguments give the same series bit for bit.
"""

from __future__ import annotations

import numpy as np

from edgekd.errors import EdgekdError


def mackey_glass(
    n_samples: int,
    *,
    tau: float = 17.0,
    beta: float = 0.2,
    gamma: float = 0.1,
    n: float = 10.0,
    dt: float = 0.1,
    sample_every: float = 1.0,
    discard: float = 500.0,
    x0: float | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """``n_samples`` values of the Mackey-Glass series (float64), sampled every ``sample_every``."""
    lag = tau / dt
    per_sample = sample_every / dt
    if n_samples < 1:
        raise EdgekdError(f"mackey_glass: n_samples={n_samples} must be >= 1")
    if dt <= 0 or abs(lag - round(lag)) > 1e-9 or abs(per_sample - round(per_sample)) > 1e-9:
        raise EdgekdError(
            f"mackey_glass: tau={tau} and sample_every={sample_every} must be whole multiples of dt={dt}"
        )
    lag, per_sample = int(round(lag)), int(round(per_sample))
    if x0 is None:
        x0 = 1.2 if seed is None else float(np.random.default_rng(seed).uniform(0.5, 1.5))
    skip = int(round(discard / dt))
    total = skip + (n_samples - 1) * per_sample + 1
    x = [x0] * (lag + 1) + [0.0] * (total - 1)  # x[lag] is t = 0; x[0..lag] is the history

    def f(xt: float, xd: float) -> float:
        return beta * xd / (1.0 + xd**n) - gamma * xt

    for i in range(lag, lag + total - 1):
        xd0, xd1 = x[i - lag], x[i - lag + 1]
        xdh = 0.5 * (xd0 + xd1)
        xt = x[i]
        k1 = f(xt, xd0)
        k2 = f(xt + 0.5 * dt * k1, xdh)
        k3 = f(xt + 0.5 * dt * k2, xdh)
        k4 = f(xt + dt * k3, xd1)
        x[i + 1] = xt + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    out = np.asarray(x[lag + skip :: per_sample], dtype=np.float64)
    return out[:n_samples]
