"""The one evaluation-data type: samples (preprocessed like training), labels when known, the task
they are judged by and where they came from. Export checks, calibration inputs, the profiler and the
on-device bench all pass :class:`EvalSet`.

Tasks: ``classification`` | ``reconstruction`` | ``detection`` (:data:`edgekd.data.registry.TASKS`; a
detection set's boxes are not carried here yet); an ``.npz`` array
``task`` or ``data.json`` key ``task`` names it (``anomaly`` is read as ``reconstruction``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.registry import TASKS, check_labels
from edgekd.errors import EdgekdError


@dataclass
class EvalSet:
    """Samples ``x`` (N, ...) float32, optional integer labels ``y`` (classes, or 0/1 anomaly flags)."""

    x: np.ndarray
    y: np.ndarray | None = None
    name: str = ""
    note: str = ""  # how the samples were chosen, when it matters to the reader (e.g. a held-out part)
    task: str | None = None  # classification | reconstruction | None (inferred from the model)
    num_classes: int | None = None
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, index: Any) -> EvalSet:
        """The same set restricted to ``x[index]`` (and ``y[index]``)."""
        return replace(self, x=self.x[index], y=None if self.y is None else self.y[index])

    def subsample(self, samples: int | None, seed: int = 0) -> EvalSet:
        """A seeded subset of ``samples`` rows in their original order (all rows when ``None``)."""
        if samples is None or samples >= len(self.x):
            return self
        rng = np.random.default_rng(seed)
        return self.rows(np.sort(rng.choice(len(self.x), size=int(samples), replace=False)))

    def describe(self) -> dict[str, Any]:
        """The report's ``data`` record."""
        return {"name": self.name, "n_test": int(len(self.x)), "sample_shape": list(self.x.shape[1:]),
                "num_classes": self.num_classes, "class_names": self.class_names, "task": self.task,
                **self.info}  # fmt: skip


def normalize_task(value: Any, where: str) -> str | None:
    """``classification`` | ``reconstruction`` | ``detection`` from a ``task`` record (``anomaly`` counts as
    reconstruction)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else None
    text = value.decode() if isinstance(value, bytes) else str(value)
    text = text.strip().lower()
    if text.startswith("anomal") or text == "reconstruction":
        return "reconstruction"
    if text in ("classification", "detection"):
        return text
    raise EdgekdError(f"{where}: task {text!r} is not one of {', '.join(TASKS)}")


def read_data_info(path: Path) -> dict[str, Any]:
    """A ``data.json`` data description; one-line EdgekdError when unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read data description ({e})") from None


def task_of(info: dict[str, Any]) -> str:
    """``data.json``'s ``task`` (``classification`` | ``reconstruction``; missing = classification)."""
    task = info.get("task") or info.get("load_args", {}).get("task")
    return normalize_task(task, "data.json") or "classification"


def _test_split(splits: Any, task: str, samples: int | None) -> EvalSet:
    test = EvalSet(splits.test.x, splits.test.y, splits.name, task=task, num_classes=splits.num_classes,
                   class_names=list(splits.class_names))  # fmt: skip
    return test.subsample(samples)


def data_from_info(info: dict[str, Any], samples: int | None = None) -> EvalSet:
    """The test split described by a run folder's ``data.json``."""
    from edgekd.data.registry import load_data_from_info

    return _test_split(load_data_from_info(info), task_of(info), samples)


def _from_npz(p: Path, samples: int | None) -> EvalSet:
    """An ``.npz`` with ``x``/``y`` (or ``x_test``/``y_test``) and optional ``task``, used as given."""
    from edgekd.files import MAX_EVAL_NPZ_BYTES, load_npz

    arrays = load_npz(p, MAX_EVAL_NPZ_BYTES, "evaluation data")  # headers first: a zip bomb is refused
    xk, yk = ("x_test", "y_test") if "x_test" in arrays else ("x", "y")
    if xk not in arrays:
        raise EdgekdError(f"{p}: missing array 'x' (found {', '.join(arrays) or 'none'})")
    if arrays[xk].ndim < 1 or len(arrays[xk]) == 0 or arrays[xk].dtype.kind not in "biuf":
        raise EdgekdError(
            f"{p}: array {xk!r} has shape {arrays[xk].shape} {arrays[xk].dtype}; expected numbers"
        )
    x = arrays[xk].astype(np.float32)
    y = check_labels(arrays[yk], str(p), yk, len(x)) if yk in arrays else None
    task = normalize_task(arrays.get("task"), f"{p}: array 'task'")  # None: inferred per model
    ev = EvalSet(x, y).subsample(samples)
    n_cls = int(ev.y.max()) + 1 if ev.y is not None and len(ev.y) and task != "reconstruction" else None
    names = [str(i) for i in range(n_cls)] if n_cls else None
    return replace(ev, name=p.name, task=task, num_classes=n_cls, class_names=names,
                   info={"note": "npz arrays used as given (no normalisation)"})  # fmt: skip


def resolve_data(data: Any, samples: int | None = None) -> EvalSet | None:
    """``None``, an :class:`EvalSet`, a registered data set name (edgekd's normalisation), a run
    folder's ``data.json`` or an ``.npz`` with ``x``/``y`` (or ``x_test``/``y_test``) used as given."""
    if data is None or isinstance(data, EvalSet):
        return data
    p = Path(str(data)).expanduser()
    if p.suffix == ".json":
        return data_from_info(read_data_info(p), samples)
    if p.suffix == ".npz":
        return _from_npz(p, samples)
    from edgekd.data.registry import load_data

    return _test_split(load_data(str(data)), "classification", samples)
