"""What is exported (a run folder, an edgekd ``.pt`` or an ``.onnx``), its task, and the data that judges it.

The task (``classification`` | ``reconstruction``) comes from, in order: ``--eval``'s or ``--calibration``'s
``.npz`` array ``task``, the run's ``data.json`` key ``task`` (missing = classification), else it is inferred
(``reconstruction`` when the model's output has as many values as its input and more than two).

Evaluation data (never the samples used to calibrate): ``--eval data.npz`` (``x``, optional ``y``), else the
run's test split, else a held-out part of a ``--calibration`` ``.npz`` (its last :data:`HOLDOUT_FRACTION`,
removed from the calibration set), else random inputs (numerics only, no accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.evalset import EvalSet, normalize_task, read_data_info
from edgekd.errors import EdgekdError
from edgekd.export import onnx as ox
from edgekd.export.quantize import read_npz

HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT_SOURCE = 5


@dataclass
class Source:
    """What is being exported: a PyTorch model (run folder or .pt) or an ONNX file."""

    kind: str  # run | checkpoint | onnx
    path: Path
    input_shape: tuple[int, ...]
    torch_model: Any = None
    record: dict[str, Any] | None = None
    onnx_path: Path | None = None
    splits: Any = None
    run: Any = None
    data_info: dict[str, Any] = field(default_factory=dict)


def _data_and_splits(path: Path) -> tuple[dict[str, Any], Any]:
    """The data description at ``path`` (``{}`` when absent) and the splits it names (None when absent)."""
    if not path.exists():
        return {}, None
    info = read_data_info(path)
    if not info:
        return info, None
    from edgekd.data import load_data_from_info

    return info, load_data_from_info(info)


def load_source(path: Any, input_shape: tuple[int, ...] | None = None) -> Source:
    """Open a run folder, an edgekd ``.pt`` (with ``data.json`` beside it when present), an ``.onnx``, or
    take a ``torch.nn.Module`` as it is (Python API; needs ``input_shape`` without the batch axis)."""
    from edgekd.runfolder import RunFolder

    if not isinstance(path, (str, Path)):
        if not hasattr(path, "forward") or input_shape is None:
            raise EdgekdError(
                "pass a run folder, a .onnx/.pt path, or a torch.nn.Module with input_shape=(C, ...)"
            )
        return Source("module", Path(type(path).__name__), tuple(int(s) for s in input_shape), path.eval())
    p = Path(path)
    if p.is_dir():
        from edgekd.models import load_model

        run = RunFolder(p)
        model, record = load_model(run.trained_model())
        info, splits = _data_and_splits(run.data_info)
        shape = tuple(int(s) for s in record["kwargs"].get("input_shape", ()))
        if not shape and splits is not None:
            shape = tuple(int(s) for s in splits.input_shape)
        if not shape:
            raise EdgekdError(f"{run.trained_model()}: the model record has no input_shape; cannot export it")
        return Source("run", p, shape, model, record, splits=splits, run=run, data_info=info)
    if not p.exists():
        raise EdgekdError(f"{p}: not found; pass a run folder, a .onnx file or an edgekd .pt model")
    if p.suffix.lower() == ".onnx":
        model = ox.load_onnx(p)
        _, shape, _ = ox.input_spec(model, p)
        return Source("onnx", p, shape, onnx_path=p)
    if p.suffix.lower() in (".pt", ".pth"):
        from edgekd.models import load_model

        model, record = load_model(p)
        shape = tuple(int(s) for s in record["kwargs"].get("input_shape", ()))
        info, splits = _data_and_splits(p.parent / "data.json")
        return Source("checkpoint", p, shape, model, record, splits=splits, data_info=info)
    raise EdgekdError(f"{p}: not a run folder, a .onnx file or an edgekd .pt model")


def declared_task(src: Source, *npz: EvalSet | None) -> tuple[str | None, str]:
    """The task an ``.npz`` or ``data.json`` declares, and where it was found (None if none does)."""
    for s in npz:
        if s is not None and s.task:
            return s.task, "npz array 'task'"
    if src.data_info:
        t = normalize_task(src.data_info.get("task"), "data.json")
        return t or "classification", "data.json" if t else "data.json (no 'task' key: classification)"
    return None, ""


def infer_task(input_shape: tuple[int, ...], output_values: int) -> tuple[str, str]:
    """No declared task: an output as large as the input (> 2 values) is read as a reconstruction."""
    n_in = int(np.prod(input_shape))
    if output_values == n_in and n_in > 2:
        return "reconstruction", "inferred: the output has as many values as the input"
    return "classification", "inferred: default"


def eval_set(src: Source, eval_path: str | Path | None, calib: EvalSet | None, calib_path: str | Path | None,
             ref_range: tuple[float, float] | None) -> tuple[EvalSet, EvalSet | None, EvalSet | None]:  # fmt: skip
    """The evaluation samples, the (possibly shortened) calibration samples and the ``--eval`` samples."""
    if eval_path is not None:
        if not str(eval_path).endswith(".npz"):
            raise EdgekdError(f"--eval {eval_path}: pass an .npz with x (preprocessed inputs) and optional y")
        ev = read_npz(eval_path, src.input_shape, ref_range)
        return EvalSet(ev.x, ev.y, f"eval npz {Path(eval_path).name}"), calib, ev
    if src.splits is not None:
        return EvalSet(src.splits.test.x, src.splits.test.y, "test"), calib, None
    if calib is not None and calib_path is not None and len(calib.x) >= MIN_HOLDOUT_SOURCE:
        k = max(1, int(round(len(calib.x) * HOLDOUT_FRACTION)))
        keep = calib.rows(slice(None, -k))
        note = (
            f"the last {k} of {len(calib.x)} samples of {Path(calib_path).name}, held out: not used to calibrate "
            "(pass --eval data.npz to judge on other data and calibrate on all)"
        )
        ys = None if calib.y is None else calib.y[-k:]
        return EvalSet(calib.x[-k:], ys, "calibration holdout", note), keep, None
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, *src.input_shape)).astype(np.float32)
    return EvalSet(x, None, "random", "random inputs: numerics only, no accuracy"), calib, None
