"""Per-time-step anomaly scoring of a trained run on SMD: the float model(s) or the int8 TFLite Micro file.

A run folder records how its data were made (``data.json``: ``load_args``); the SMD series are
rebuilt from it, the validation and test windows (``test_stride``, covering every step) go through a
predictor, the per-position reconstruction error (squared error averaged over the metrics) becomes a
per-step score (``edgekd.data.windows.step_scores``) and each machine gets
``edgekd.metrics.anomaly.anomaly_report`` (best-F1 and validation thresholds, point-wise and
point-adjusted, AUC); ``mean`` is the unweighted mean over machines.

Several model files are scored as an ensemble: the mean of their reconstructions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.smd import SmdData, load_smd
from edgekd.data.windows import step_scores
from edgekd.errors import EdgekdError
from edgekd.metrics.anomaly import DEFAULT_VAL_QUANTILE, anomaly_report, mean_report
from edgekd.runfolder import RunFolder

Predictor = Callable[[np.ndarray], np.ndarray]


def smd_data_of_run(run_dir: str | Path, *, test_stride: int | None = None) -> SmdData:
    """The ``SmdData`` a run was trained on (from its ``data.json``), optionally with another test stride."""
    path = Path(run_dir) / "data.json"
    try:
        info = json.loads(path.read_text())
        args = dict(info["load_args"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgekdError(
            f"{path}: missing or without 'load_args'; score a run folder made by edgekd"
        ) from None
    if args.get("name") != "smd":
        raise EdgekdError(f"{path}: data set {args.get('name')!r}; per-step scoring is for smd runs")
    opts = dict(args.get("options") or {})
    opts.pop("privileged", None)
    if test_stride is not None:
        opts["test_stride"] = int(test_stride)
    return load_smd(**opts)


def module_predictor(models: Sequence[Callable[[Any], Any]], batch: int = 512) -> Predictor:
    """Mean reconstruction of in-memory torch models (one: the model itself), in batches, no grad."""
    import torch

    if not models:
        raise EdgekdError("module_predictor: no model given")

    def predict(x: np.ndarray) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32))
                outs.append(torch.stack([m(xb) for m in models]).mean(0).numpy())
        return np.concatenate(outs)

    return predict


def torch_predictor(paths: Sequence[str | Path], batch: int = 512) -> Predictor:
    """Mean reconstruction of the model files (one: the model itself), in batches, on the CPU."""
    from edgekd.models.checkpoint import load_model

    if not paths:
        raise EdgekdError("torch_predictor: no model file given")
    return module_predictor([load_model(p)[0].eval() for p in paths], batch)


def tflm_predictor(path: str | Path) -> Predictor:
    """The int8 ``.tflite`` on the host TFLite Micro interpreter (quantized input, dequantized output)."""
    from edgekd.runtimes import TFLMRuntime

    rt = TFLMRuntime(path)
    rt.load()

    def predict(x: np.ndarray) -> np.ndarray:
        y = rt.predict(x)
        if y.shape != x.shape and y.ndim == 3 and np.moveaxis(y, 1, -1).shape == x.shape:
            y = np.moveaxis(y, 1, -1)  # channels-last output back to (N, length, features)
        if y.shape != x.shape:
            raise EdgekdError(
                f"{path}: output shape {tuple(y.shape)} is not the window shape {tuple(x.shape)}"
            )
        return y

    return predict


def position_errors(predict: Predictor, x: np.ndarray) -> np.ndarray:
    """``(N, length)``: the squared reconstruction error at each position, averaged over the metrics."""
    y = predict(x)
    if y.shape != x.shape:
        raise EdgekdError(f"reconstruction has shape {tuple(y.shape)}, the windows {tuple(x.shape)}")
    return ((np.asarray(y, np.float64) - x) ** 2).mean(axis=2)


def machine_scores(predict: Predictor, data: SmdData) -> list[dict[str, np.ndarray]]:
    """Per machine: ``val`` and ``test`` per-step scores and the test ``labels``."""
    per: list[dict[str, np.ndarray]] = [{} for _ in data.machines]
    for part in ("val", "test"):
        x, starts, owner = data.windows(part, copy=True)
        err = position_errors(predict, x)
        for i, m in enumerate(data.machines):
            sel = owner == i
            per[i][part] = step_scores(err[sel], starts[sel], len(getattr(m, part)))
    for i, m in enumerate(data.machines):
        per[i]["labels"] = m.labels
    return per


def score_smd(predict: Predictor, data: SmdData, *, quantile: float = DEFAULT_VAL_QUANTILE) -> dict[str, Any]:
    """``{"machines": {name: anomaly_report}, "mean": mean_report}`` for a predictor on ``data``."""
    reports = {}
    for m, s in zip(data.machines, machine_scores(predict, data)):
        reports[m.name] = anomaly_report(s["test"], s["labels"], s["val"], quantile=quantile)
    return {"machines": reports, "mean": mean_report(list(reports.values()))}


def score_run(
    run_dir: str | Path,
    *,
    models: Sequence[str | Path] | None = None,
    int8: str | Path | None = None,
    test_stride: int | None = None,
    quantile: float = DEFAULT_VAL_QUANTILE,
) -> dict[str, Any]:
    """Score a run folder on its SMD machines.

    ``models``: model files to average (default: the run's ``student.pt``, else ``model.pt``);
    ``int8``: score that TFLite Micro file instead (e.g. ``export/tflite-micro/model_int8.tflite``).
    """
    data = smd_data_of_run(run_dir, test_stride=test_stride)
    if int8 is not None:
        predict, what = tflm_predictor(int8), {"int8_tflm": str(int8)}
    else:
        files = list(models) if models else [RunFolder(run_dir).trained_model()]
        predict, what = torch_predictor(files), {"models": [str(f) for f in files]}
    out = score_smd(predict, data, quantile=quantile)
    return {**what, "test_stride": data.test_stride, "length": data.length, **out}
