"""Autoencoder metrics: per-sample anomaly scores (reconstruction MSE) and how far a converted or
quantized model's reconstructions are from the float model's."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.metrics.ranks import spearman


def reconstruction_scores(outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Per-sample anomaly score of an autoencoder: mean squared reconstruction error."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    ref = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    if out.shape != ref.shape:
        raise ValueError(f"reconstruction output has {out.shape[1]} values per sample, input {ref.shape[1]}")
    return ((out - ref) ** 2).mean(axis=1)


def sqnr_db(got: np.ndarray, reference: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio of ``got`` against ``reference`` in dB (None if identical)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    noise = float(((np.asarray(got, dtype=np.float64).ravel() - ref) ** 2).sum())
    return float(10 * np.log10(float((ref**2).sum()) / noise)) if noise > 0 else None


def reconstruction_metrics(outputs: np.ndarray, reference: np.ndarray, inputs: np.ndarray) -> dict[str, Any]:
    """A quantized (or converted) autoencoder against the float one on the same inputs: max |error|,
    SQNR (dB; None when identical) and the Spearman rank correlation of per-sample anomaly scores."""
    n = min(len(outputs), len(reference), len(inputs))
    got, ref = outputs[:n].reshape(n, -1), reference[:n].reshape(n, -1)
    s_got, s_ref = reconstruction_scores(got, inputs[:n]), reconstruction_scores(ref, inputs[:n])
    return {
        "max_abs_error": float(np.max(np.abs(got - ref))) if n else None,
        "sqnr_db": sqnr_db(got, ref),
        "score_spearman": spearman(s_got, s_ref),
    }
