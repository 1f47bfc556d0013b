"""Sliding windows over a multivariate series and per-time-step scores from per-window errors.

Conventions: a series is ``(T, F)`` (time, features); windows are ``(N, length, F)``; window ``i``
covers time steps ``starts[i] .. starts[i] + length - 1``.
"""

from __future__ import annotations

import numpy as np

from edgekd.errors import EdgekdError


def window_starts(n_steps: int, length: int, stride: int = 1, *, cover_end: bool = False) -> np.ndarray:
    """Start indices ``0, stride, 2*stride, ...`` of every full window of ``length`` steps.

    ``cover_end`` adds one last window ending exactly at the final step when the stride would
    otherwise leave the tail uncovered, so that every time step lies in at least one window.
    """
    if length < 1 or stride < 1:
        raise EdgekdError(f"window length={length} and stride={stride} must both be >= 1")
    if length > n_steps:
        raise EdgekdError(f"window length {length} is longer than the series ({n_steps} steps)")
    starts = np.arange(0, n_steps - length + 1, stride, dtype=np.int64)
    if cover_end and starts[-1] != n_steps - length:
        starts = np.append(starts, n_steps - length)
    return starts


def sliding_windows(
    series: np.ndarray, length: int, stride: int = 1, *, cover_end: bool = False, copy: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``series`` ``(T, F)`` into windows ``(N, length, F)``; returns ``(windows, starts)``.

    With ``copy`` (default) the windows are a contiguous copy; without, a read-only strided view of
    ``series`` when the starts are evenly spaced (no memory: 23,700 steps x 100 x 38 would be 360 MB).
    """
    series = np.asarray(series)
    if series.ndim == 1:
        series = series[:, None]
    if series.ndim != 2:
        raise EdgekdError(f"sliding_windows expects a (time, features) array, got shape {series.shape}")
    starts = window_starts(len(series), length, stride, cover_end=cover_end)
    if not copy and (len(starts) < 2 or np.all(np.diff(starts) == stride)):
        view = np.lib.stride_tricks.sliding_window_view(series, length, axis=0)  # (T-L+1, F, L)
        return view[starts[0] :: stride][: len(starts)].transpose(0, 2, 1), starts
    idx = starts[:, None] + np.arange(length)[None, :]
    return np.ascontiguousarray(series[idx]), starts


def window_labels(step_labels: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """A window is anomalous (1) when any time step inside it is labelled anomalous."""
    step_labels = np.asarray(step_labels)
    idx = starts[:, None] + np.arange(length)[None, :]
    return step_labels[idx].max(axis=1).astype(np.int64)


def step_scores(
    window_errors: np.ndarray, starts: np.ndarray, n_steps: int, *, reduce: str = "mean"
) -> np.ndarray:
    """Per-time-step anomaly score from reconstruction errors of windows.

    ``window_errors`` is ``(N, length)``: an error per position, e.g. the squared error averaged over
    features (one error per window, ``(N,)``, is refused).

    * ``reduce="mean"``: a step's score is the mean error at that step over every window covering it.
    * ``reduce="last"``: the online rule: a step's score is its error in the earliest window covering
      it, i.e. (stride 1) the window that ends at that step, scored as soon as the step arrives;
      steps before the first window's end take the first window's errors at their positions.

    Steps covered by no window (only possible with a stride and no ``cover_end``) get NaN.
    """
    errors = np.asarray(window_errors, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    if errors.ndim == 1:
        raise EdgekdError("step_scores needs per-position errors (N, length); got one value per window")
    if len(errors) != len(starts):
        raise EdgekdError(f"step_scores: {len(errors)} window errors but {len(starts)} window starts")
    length = errors.shape[1]
    idx = starts[:, None] + np.arange(length)[None, :]
    if idx.size and idx.max() >= n_steps:
        raise EdgekdError(f"step_scores: a window reaches step {idx.max()} but the series has {n_steps}")
    if reduce == "mean":
        total = np.bincount(idx.ravel(), weights=errors.ravel(), minlength=n_steps)
        count = np.bincount(idx.ravel(), minlength=n_steps).astype(np.float64)
        out = np.full(n_steps, np.nan)
        np.divide(total, count, out=out, where=count > 0)
        return out
    if reduce == "last":
        out = np.full(n_steps, np.nan)
        # write the latest windows first so that the earliest window covering a step has the last word
        order = np.argsort(starts, kind="stable")[::-1]
        for i in order:
            out[idx[i]] = errors[i]
        return out
    raise EdgekdError(f"step_scores: reduce={reduce!r}; valid: mean, last")
