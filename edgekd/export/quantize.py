"""Calibration data for post-training quantization: recipes (``calibration/*.yaml``) or the user's ``.npz``.

A recipe::

    name: default
    split: train            # train | val | test
    num_samples: 200
    selection: stratified   # stratified (equal share per class) | random | first
    seed: 0
    ranges: auto            # int8 activation ranges: auto (best on the validation split) | minmax | percentile | mse | learned (QAT)

Samples come from the run's splits, which already carry the training preprocessing (``data.json``'s
normalisation). An ``.npz`` holds ``x`` (N, *input_shape) float, already preprocessed like training,
optionally ``y`` (one integer label per row: class, or 0/1 anomaly flag) and ``task`` (a string:
``classification`` | ``reconstruction``). Fewer than :data:`MIN_SAMPLES` samples gives a warning. The
int8 models themselves are made by the conversion routes (:mod:`edgekd.export.routes`); host-side input
quantization follows :mod:`edgekd.graph.quant`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.evalset import EvalSet, normalize_task
from edgekd.data.registry import check_labels
from edgekd.errors import EdgekdError
from edgekd.files import MAX_EVAL_NPZ_BYTES, load_npz

MIN_SAMPLES = 100
SELECTIONS = ("stratified", "random", "first")
SPLITS = ("train", "val", "test")
RANGES = ("auto", "minmax", "percentile", "mse", "learned")  # edgekd.export.ranges.METHODS


@dataclass(frozen=True)
class CalibrationRecipe:
    name: str = "default"
    split: str = "train"
    num_samples: int = 200
    selection: str = "stratified"
    seed: int = 0
    ranges: str = "auto"


def calibration_dirs() -> list[Path]:
    """The source checkout's ``calibration/``, the copy shipped in the installed package, ``./calibration``."""
    here = Path(__file__)
    return [here.resolve().parents[2] / "calibration", here.parents[1] / "_data" / "calibration",
            Path.cwd() / "calibration"]  # fmt: skip


def load_recipe(path: str | Path | None = None) -> CalibrationRecipe:
    """Load a calibration recipe YAML (``None`` = ``calibration/default.yaml`` or the built-in default)."""
    if path is None:
        for d in calibration_dirs():
            if (d / "default.yaml").is_file():
                path = d / "default.yaml"
                break
        else:
            return CalibrationRecipe()
    p = Path(path)
    if not p.is_file():
        for d in calibration_dirs():  # a bare recipe name
            if (d / f"{p.name}.yaml").is_file():
                p = d / f"{p.name}.yaml"
                break
        else:
            raise EdgekdError(f"{path}: calibration recipe not found")
    from edgekd.yamlio import read_yaml_file

    data = read_yaml_file(p, "calibration recipe") or {}
    if not isinstance(data, dict):
        raise EdgekdError(f"{p}: a calibration recipe must be a YAML mapping")
    valid = set(CalibrationRecipe.__dataclass_fields__)
    unknown = sorted(set(data) - valid)
    if unknown:
        raise EdgekdError(f"{p}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    r = CalibrationRecipe(**{"name": p.stem, **data})
    if r.split not in SPLITS:
        raise EdgekdError(f"{p}: key 'split' is {r.split!r}; valid: {', '.join(SPLITS)}")
    if r.selection not in SELECTIONS:
        raise EdgekdError(f"{p}: key 'selection' is {r.selection!r}; valid: {', '.join(SELECTIONS)}")
    if r.ranges not in RANGES:
        raise EdgekdError(f"{p}: key 'ranges' is {r.ranges!r}; valid: {', '.join(RANGES)}")
    if not isinstance(r.num_samples, int) or r.num_samples < 1:
        raise EdgekdError(f"{p}: key 'num_samples' must be a positive integer")
    return r


def select(x: np.ndarray, y: np.ndarray | None, recipe: CalibrationRecipe) -> np.ndarray:
    """Pick ``recipe.num_samples`` rows of ``x`` (stratified by ``y``, random, or the first ones)."""
    n = min(recipe.num_samples, len(x))
    rng = np.random.default_rng(recipe.seed)
    if recipe.selection == "first":
        idx = np.arange(n)
    elif recipe.selection == "random" or y is None:
        idx = np.sort(rng.choice(len(x), n, replace=False))
    else:
        classes = np.unique(y)
        per_class = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
        idx_list: list[int] = []
        k = 0
        while len(idx_list) < n:  # round robin over classes: equal share, remainder spread
            for rows in per_class:
                if k < len(rows) and len(idx_list) < n:
                    idx_list.append(int(rows[k]))
            k += 1
        idx = np.sort(np.array(idx_list))
    return np.ascontiguousarray(x[idx], dtype=np.float32)


def read_npz(
    path: str | Path, input_shape: tuple[int, ...], ref_range: tuple[float, float] | None = None
) -> EvalSet:
    """Read ``x`` (or the only array), optional ``y`` and ``task`` from an ``.npz`` and check ``x`` against the model.

    ``y``: one integer label per row (classification) or 0/1 anomaly flags; ``task``: a string array
    ``classification`` | ``reconstruction`` (autoencoders; ``anomaly`` is accepted as a synonym).
    """
    p = Path(path)
    expected = f"(N, {', '.join(str(s) for s in input_shape)}) float32"
    # the .npy headers are checked first: a zip bomb is refused before anything is allocated
    arrays = load_npz(p, MAX_EVAL_NPZ_BYTES, "calibration or evaluation samples")
    keys = list(arrays)
    data_keys = [k for k in keys if k not in ("y", "task")]
    key = "x" if "x" in keys else (data_keys[0] if len(data_keys) == 1 else None)
    if key is None:
        raise EdgekdError(
            f"{p}: no array 'x' (found {', '.join(keys) or 'none'}); expected x of shape {expected}"
        )
    x, y, task_arr = arrays[key], arrays.get("y"), arrays.get("task")
    if tuple(x.shape[1:]) != tuple(input_shape) or x.ndim != len(input_shape) + 1 or len(x) == 0:
        raise EdgekdError(f"{p}: array 'x' has shape {tuple(x.shape)}, expected {expected}")
    if not np.issubdtype(x.dtype, np.floating):
        raise EdgekdError(
            f"{p}: array 'x' has dtype {x.dtype}, expected {expected} with the training preprocessing applied"
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise EdgekdError(f"{p}: array 'x' contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if ref_range is not None:
        rlo, rhi = ref_range
        margin = 0.5 * max(rhi - rlo, 1e-6)
        if lo < rlo - margin or hi > rhi + margin:
            raise EdgekdError(
                f"{p}: values span [{lo:.3g}, {hi:.3g}] but the training inputs span [{rlo:.3g}, {rhi:.3g}]; "
                "apply the training preprocessing (data.json normalisation)"
            )
    elif max(abs(lo), abs(hi)) > 1e4:
        raise EdgekdError(f"{p}: values span [{lo:.3g}, {hi:.3g}]; expected preprocessed (normalised) inputs")
    if y is not None:
        y = np.asarray(y).ravel()
        if len(y) != len(x) or y.dtype.kind not in "iub":
            raise EdgekdError(
                f"{p}: array 'y' must hold one integer label per row of x ({len(x)}), got {y.dtype} {y.shape}"
            )
        y = check_labels(y, str(p), "y", len(x))
    return EvalSet(x, y, p.name, task=normalize_task(task_arr, f"{p}: array 'task'"))


def train_range(splits: Any | None) -> tuple[float, float] | None:
    """(min, max) of the training inputs, which an ``.npz``'s ``x`` is checked against (None without splits)."""
    if splits is None:
        return None
    return float(splits.train.x.min()), float(splits.train.x.max())


def calibration_samples(
    calibration: str | Path | None,
    input_shape: tuple[int, ...],
    splits: Any | None,
    ref_range: tuple[float, float] | None = None,
) -> tuple[EvalSet, dict[str, Any]]:
    """Calibration samples (an ``.npz``'s labels and task kept) and a description for ``export.json``;
    warns (in the info) below :data:`MIN_SAMPLES` samples. ``ref_range``: :func:`train_range` when known."""
    ref = ref_range if ref_range is not None else train_range(splits)
    samples = None
    if calibration is not None and str(calibration).endswith(".npz"):
        samples = read_npz(calibration, input_shape, ref)
        x = samples.x
        info: dict[str, Any] = {"source": str(calibration), "samples": int(len(x))}
    else:
        if splits is None:
            raise EdgekdError(
                "no training data to calibrate with: pass --calibration data.npz (x: preprocessed inputs)"
            )
        recipe = load_recipe(calibration)
        part = getattr(splits, recipe.split)
        if len(part) == 0:
            raise EdgekdError(f"calibration recipe {recipe.name!r}: the {recipe.split} split is empty")
        x = select(part.x, part.y, recipe)
        info = {"source": "recipe", "recipe": asdict(recipe), "samples": int(len(x))}
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise EdgekdError(
                f"data.json inputs have shape {tuple(x.shape[1:])} but the model expects {tuple(input_shape)}"
            )
    if len(x) < MIN_SAMPLES:
        info["warning"] = f"only {len(x)} calibration samples (< {MIN_SAMPLES}); int8 ranges may be poor"
    return (samples or EvalSet(x, name=f"recipe {recipe.name}")), info
