"""Data set registry and the split/normalisation logic shared by every loader.

A loader returns ``RawData``: uint8/float arrays ``(N, C, H, W)`` (or ``(N, F)``) for train and
optionally test. ``load_data`` then makes seeded train/val(/test) splits, computes normalisation
statistics on the training split only and applies them to all splits.

Per-image targets beyond the one label ``y`` travel in ``targets`` (name -> array whose first axis is
aligned with ``x``, indexed with it in every subset and batch). The ``detection`` task uses two
(:mod:`edgekd.data.detection`): ``boxes`` float32 ``(N, K, 4)`` as ``x0, y0, x1, y1`` in input pixels and
``classes`` int64 ``(N, K)``, padded with class ``-1`` (and zero boxes) beyond each image's objects; ``y``
then holds the number of objects per image.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.registry import Registry

DEFAULT_DATA_DIR = "~/.cache/edgekd/datasets"
#: what a data set is for: class labels, reconstruction (autoencoders; labels = anomaly flags), or
#: detection (boxes and classes per image in ``targets``; labels = object counts)
TASKS = ("classification", "reconstruction", "detection")


def data_dir() -> Path:
    """``$EDGEKD_DATA_DIR`` or ``~/.cache/edgekd/datasets``."""
    return Path(os.environ.get("EDGEKD_DATA_DIR", DEFAULT_DATA_DIR)).expanduser()


@dataclass
class RawData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str]
    source: str
    scale: float = 1.0  # divide raw values by this first (255 for uint8 images)
    task: str = "classification"  # or "reconstruction" (autoencoders; y = anomaly labels or zeros)
    # privileged inputs (Vapnik): only the teacher reads them, only in training; name -> rows aligned with x
    extra_train: dict[str, np.ndarray] = field(default_factory=dict)
    extra_test: dict[str, np.ndarray] = field(default_factory=dict)
    # a loader that makes its own validation split (e.g. the end of each time series) sets these
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    normalised: bool = False  # inputs already normalised by the loader (mean 0, std 1 kept as is)
    # per-image targets aligned with x_train / x_test / x_val (detection: boxes, classes), kept as given
    targets_train: dict[str, np.ndarray] = field(default_factory=dict)
    targets_test: dict[str, np.ndarray] = field(default_factory=dict)
    targets_val: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ArrayDataset:
    """Normalised float32 inputs ``x`` (N, C, H, W) and int64 labels ``y`` (N,); ``extra`` holds
    privileged inputs aligned with ``x`` (float32, as given); ``targets`` per-image targets aligned with
    ``x`` and never normalised (detection: ``boxes`` (N, K, 4), ``classes`` (N, K), -1 padded)."""

    x: np.ndarray
    y: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    targets: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.x[idx], self.y[idx], {k: v[idx] for k, v in self.extra.items()},
                            {k: v[idx] for k, v in self.targets.items()})  # fmt: skip


@dataclass
class DataSplits:
    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]
    mean: float
    std: float
    scale: float
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"

    def describe(self) -> dict[str, Any]:
        """What goes into the run folder's ``data.json`` (``task`` is read by export and profile)."""
        return {
            "name": self.name,
            "task": self.task,
            "extra_inputs": sorted(self.train.extra),
            **(
                {"targets": {k: list(v.shape[1:]) for k, v in self.train.targets.items()}}
                if self.train.targets
                else {}
            ),
            "source": self.source,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "class_names": self.class_names,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "normalisation": {
                "scale": self.scale,
                "mean": self.mean,
                "std": self.std,
                "formula": "x = (raw / scale - mean) / std",
            },
            **self.info,
        }

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Apply the training normalisation to raw inputs (e.g. uint8 images)."""
        return ((raw.astype(np.float32) / self.scale - self.mean) / self.std).astype(np.float32)


Loader = Callable[..., RawData]
DATASETS: Registry[Loader] = Registry("data set")
register_dataset = DATASETS.register


def check_labels(y: Any, source: str, key: str = "y", rows: int | None = None,
                 num_classes: int | None = None) -> np.ndarray:  # fmt: skip
    """``y`` as int64 class labels, or one EdgekdError line naming ``source`` and ``key``: labels are
    non-empty, integers (whole-number floats are accepted), non-negative, one per row of x (``rows``) and,
    when the class count is known, below it."""
    y = np.asarray(y)
    what = f"{source}: array {key!r}"
    if y.size == 0:
        raise EdgekdError(f"{what} is empty; expected one integer class label per row of x")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise EdgekdError(f"{what} holds non-integer values; expected integer class labels 0, 1, 2, ...")
    elif y.dtype.kind not in "iub":
        raise EdgekdError(f"{what} has dtype {y.dtype}; expected integer class labels 0, 1, 2, ...")
    y = y.astype(np.int64).ravel()
    if rows is not None and len(y) != rows:
        raise EdgekdError(f"{what} has {len(y)} labels but x has {rows} rows; give one label per row")
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise EdgekdError(f"{what} holds the negative label {low}; class labels are 0, 1, 2, ...")
    if num_classes is not None and high >= num_classes:
        raise EdgekdError(
            f"{what} holds label {high} but there are {num_classes} classes (labels 0..{num_classes - 1}); "
            "fix the labels or the class names"
        )
    return y


def check_options(name: str, options: dict[str, Any] | None, source: str = "recipe") -> None:
    """Refuse (one line naming ``source`` and the key) an unknown data set, an option its loader does not
    take, or a missing required one: ``data.options`` are the loader's keyword arguments."""
    try:
        loader = DATASETS.get(name)
    except EdgekdError as e:
        raise EdgekdError(f"{source}: key 'data.name': {e}") from None
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given = options or {}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in given if k not in named]
        if unknown:
            valid = f"valid keys here: {', '.join(named)}" if named else f"{name!r} takes no options"
            raise EdgekdError(
                f"{source}: unknown key 'data.options.{unknown[0]}' for data set {name!r}; {valid}"
            )
    missing = [n for n in named if params[n].default is inspect.Parameter.empty and n not in given]
    if missing:
        raise EdgekdError(
            f"{source}: data set {name!r} needs key 'data.options.{missing[0]}' (its options: {', '.join(named)})"
        )


def _stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, taken) where ``taken`` holds ``fraction`` of each class."""
    taken = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        taken.append(idx[:n])
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.array([], dtype=np.int64)
    mask = np.ones(len(y), bool)
    mask[taken_idx] = False
    return np.flatnonzero(mask), taken_idx


def load_data(
    name: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    train_fraction: float = 1.0,
    exclude_classes: list[int] | None = None,
    options: dict[str, Any] | None = None,
) -> DataSplits:
    """Load a registered data set and split it reproducibly.

    * ``val_fraction`` of the training set (stratified) becomes validation.
    * When the data set has no test split, ``test_fraction`` (stratified) of it is held out first.
    * ``train_fraction`` keeps that stratified fraction of the remaining training examples.
    * ``exclude_classes`` removes those classes from the *training* split only (Hinton's omitted-3).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise EdgekdError(f"data.val_fraction={val_fraction}: must be in [0, 1)")
    if not 0.0 < train_fraction <= 1.0:
        raise EdgekdError(f"data.train_fraction={train_fraction}: must be in (0, 1]")
    check_options(name, options, "load_data")
    raw = DATASETS.get(name)(**(options or {}))
    if raw.task not in TASKS:
        raise EdgekdError(f"data set {name!r}: task {raw.task!r}; valid: {', '.join(TASKS)}")
    if exclude_classes and raw.task == "detection":
        raise EdgekdError(f"data set {name!r}: data.exclude_classes filters image labels; detection has none")
    rng = np.random.default_rng(seed)
    full = ArrayDataset(
        raw.x_train, raw.y_train.astype(np.int64), dict(raw.extra_train), dict(raw.targets_train)
    )
    for what, rows in (("privileged input", full.extra), ("target", full.targets)):
        for k, v in rows.items():
            if len(v) != len(full.y):
                raise EdgekdError(f"data set {name!r}: {what} {k!r} has {len(v)} rows, x has {len(full.y)}")
    if raw.x_test is None:
        rest, test_idx = _stratified_split(full.y, test_fraction, rng)
        test = full.subset(test_idx)
        full = full.subset(rest)
    else:
        test = ArrayDataset(
            raw.x_test, raw.y_test.astype(np.int64), dict(raw.extra_test), dict(raw.targets_test)
        )
    if raw.x_val is not None:  # the loader's own validation split (time order matters for series)
        y_val = raw.y_val if raw.y_val is not None else np.zeros(len(raw.x_val), np.int64)
        val, train = ArrayDataset(raw.x_val, y_val.astype(np.int64), targets=dict(raw.targets_val)), full
    else:
        train_idx, val_idx = _stratified_split(full.y, val_fraction, rng)
        val, train = full.subset(val_idx), full.subset(train_idx)
    load_args = {"name": name, "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                 "train_fraction": train_fraction, "exclude_classes": list(exclude_classes or []),
                 "options": dict(options or {})}  # fmt: skip
    info: dict[str, Any] = {"seed": seed, "val_fraction": val_fraction, "load_args": load_args}
    if train_fraction < 1.0:
        _, keep = _stratified_split(train.y, train_fraction, rng)
        train = train.subset(keep)
        info["train_fraction"] = train_fraction
    if exclude_classes:
        train = train.subset(np.flatnonzero(~np.isin(train.y, exclude_classes)))
        info["exclude_classes_from_train"] = list(exclude_classes)
    if len(train.y) == 0:
        raise EdgekdError(f"data set {name!r}: the training split is empty after filtering")
    if raw.normalised:
        mean, std = 0.0, 1.0
    else:
        scaled = train.x.astype(np.float32) / raw.scale
        mean, std = float(scaled.mean()), float(scaled.std() + 1e-8)
    splits = DataSplits(
        name=name, train=train, val=val, test=test, num_classes=len(raw.class_names),
        input_shape=tuple(int(s) for s in raw.x_train.shape[1:]), class_names=raw.class_names,
        mean=mean, std=std, scale=raw.scale, source=raw.source, info=info, task=raw.task,
    )  # fmt: skip
    for part in (splits.train, splits.val, splits.test):
        part.x = splits.preprocess(part.x)
        part.extra = {k: np.asarray(v, np.float32) for k, v in part.extra.items()}
    return splits


def load_data_from_info(info: dict[str, Any]) -> DataSplits:
    """Reload exactly the splits described by a run folder's ``data.json`` (its ``load_args``)."""
    try:
        args = dict(info["load_args"])
    except (KeyError, TypeError):
        raise EdgekdError(
            "data.json has no 'load_args'; re-run `edgekd train`/`distill` to rewrite it"
        ) from None
    return load_data(args.pop("name"), **args)
