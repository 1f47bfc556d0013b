"""Make a trained LSTM-autoencoder run exportable to int8 TFLite Micro: the same weights, unrolled.

``nn.LSTM`` becomes one ONNX ``LSTM`` node that the ONNX -> TFLite route cannot convert; the same
network built with ``lstm-ae`` ``unrolled: true`` (``UnrolledLSTM``: per-step FULLY_CONNECTED,
LOGISTIC, TANH, MUL, ADD) converts and runs in int8. Training is faster fused, so train fused and
unroll the finished run: ``unroll_run(run, out)`` writes a run folder ``out`` with the top-level files
of ``run`` (data.json, recipe.yaml, ...) and its trained model rebuilt unrolled, ready for
``edgekd export out --target tflite-micro``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.models.checkpoint import load_model, save_model
from edgekd.runfolder import RunFolder


def unroll_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy ``run_dir``'s top-level files to ``out_dir`` with its ``lstm-ae`` rebuilt unrolled; returns the model file."""
    src, dst = Path(run_dir), Path(out_dir)
    model_file = RunFolder(src).trained_model()
    model, record = load_model(model_file)
    if record.get("name") != "lstm-ae":
        raise EdgekdError(f"{model_file}: model {record.get('name')!r}; only lstm-ae runs are unrolled")
    if dst.resolve() == src.resolve() or (dst.exists() and any(dst.iterdir())):
        raise EdgekdError(f"{dst}: choose a new, empty folder for the unrolled run")
    kwargs = {**record.get("kwargs", {}), "unrolled": True}
    unrolled = build_model("lstm-ae", **kwargs)
    unrolled.load_state_dict(model.state_dict())  # same parameter names and shapes
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".pt":
            shutil.copy2(f, dst / f.name)
    meta = {**record.get("meta", {}), "unrolled_from": str(model_file)}
    return save_model(dst / model_file.name, unrolled, "lstm-ae", kwargs, meta=meta)
