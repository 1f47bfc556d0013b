"""edgekd.data.mackey_glass: the generator against an exact solution and an independent integrator."""

import math

import numpy as np
import pytest

from edgekd.data.mackey_glass import mackey_glass
from edgekd.errors import EdgekdError


def test_exact_solution_on_the_first_delay_interval():
    # for 0 <= t <= tau the delayed term sees the constant history x0, so the equation is linear:
    # x(t) = c/gamma + (x0 - c/gamma) exp(-gamma t), with c = beta x0 / (1 + x0^10)
    x0 = 1.2
    c = 0.2 * x0 / (1 + x0**10)
    exact = [c / 0.1 + (x0 - c / 0.1) * math.exp(-0.1 * t) for t in range(18)]
    got = mackey_glass(18, discard=0, x0=x0)
    np.testing.assert_allclose(got, exact, rtol=1e-9)


def _euler(n, x0=1.2, h=0.001, tau=17.0):
    """A separate, plain forward-Euler integrator with a 100x smaller step."""
    lag = int(round(tau / h))
    hist = [x0] * (lag + 1)
    out = [x0]
    per = int(round(1 / h))
    for i in range((n - 1) * per):
        xd = hist[-lag - 1]
        x = hist[-1]
        hist.append(x + h * (0.2 * xd / (1 + xd**10) - 0.1 * x))
        if (i + 1) % per == 0:
            out.append(hist[-1])
        if len(hist) > 2 * lag + 2:
            del hist[: len(hist) - lag - 1]
    return np.array(out)


def test_matches_independent_euler_integrator():
    got = mackey_glass(60, discard=0)
    ref = _euler(60)
    assert np.max(np.abs(got - ref)) < 2e-3
    assert np.max(np.abs(got - ref)) > 0  # two different schemes, not the same code


def test_seeded_and_chaotic_range():
    a = mackey_glass(2000, seed=3)
    assert np.array_equal(a, mackey_glass(2000, seed=3))
    b = mackey_glass(2000, seed=4)
    assert not np.allclose(a, b)
    # the tau=17 attractor stays in about (0.2, 1.4) and does not settle to a fixed point or cycle
    assert 0.2 < a.min() < 0.6 and 1.2 < a.max() < 1.45
    assert np.std(a[-500:]) > 0.15


def test_bad_arguments():
    with pytest.raises(EdgekdError, match="whole multiples of dt"):
        mackey_glass(10, tau=17.05)
    with pytest.raises(EdgekdError, match="n_samples"):
        mackey_glass(0)


def _benchmark():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    return importlib.import_module("privileged_mackey_glass")


def test_privileged_examples_and_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    b = _benchmark()
    s = np.arange(40, dtype=float) ** 1.5 % 7  # any series: checks the indexing only
    x, xp, y = b.make_examples(s, 8, "target-neighbours")
    t = 3  # the first example predicts from s[0..3]
    assert x[0].tolist() == s[0:4].tolist() and xp[0].tolist() == [s[t + 7], s[t + 9]]
    assert y[0] == float(s[t + 8] > s[t]) and len(y) == 40 - 3 - 9
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(200, 3))
    ys = (xs @ [1.0, -2.0, 0.5] + rng.normal(size=200) > 0).astype(float)
    w = b.fit_logreg(xs, ys, l2=1e-2)
    ref = LogisticRegression(C=1 / (1e-2 * 200), tol=1e-10, max_iter=10_000).fit(xs, ys)
    np.testing.assert_allclose(w[:-1], ref.coef_[0], atol=1e-4)
    np.testing.assert_allclose(w[-1], ref.intercept_[0], atol=1e-4)
    # soft targets: the imitation loss is a logistic regression on (1 - lambda) y + lambda s
    soft = b.sigmoid(xs @ [0.3, 0.1, 0.0])
    w_soft = b.fit_logreg(xs, soft, l2=1e-6)
    np.testing.assert_allclose(w_soft, [0.3, 0.1, 0.0, 0.0], atol=2e-3)
