"""Server Machine Dataset (SMD; Su et al., KDD 2019, the OmniAnomaly release) for anomaly detection.

Layout under ``$EDGEKD_DATA_DIR/smd/ServerMachineDataset/`` (the public release, unchanged):
``train/<machine>.txt`` and ``test/<machine>.txt`` hold one time step per line, comma-separated
metrics (38 per machine); ``test_label/<machine>.txt`` one 0/1 label per test step;
``interpretation_label/<machine>.txt`` lines ``start-end:dim,dim,...`` (optional, 1-based dims).

Splits, per machine: the *last* ``val_fraction`` of the training series becomes the validation
part (no shuffling: it is the most recent normal data, as a deployment would hold out); the rest is
the fit part. Normalisation statistics come from the fit part only and are applied to fit,
validation and test. Windows never cross a part or a machine boundary. Several machines are
concatenated window-wise; each keeps its own statistics and its own test labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.registry import ArrayDataset, DataSplits, RawData, data_dir, register_dataset
from edgekd.data.windows import sliding_windows, window_labels, window_starts
from edgekd.errors import EdgekdError
from edgekd.names import check_safe_name

SMD_SUBDIR = Path("smd") / "ServerMachineDataset"
NORMALISATIONS = ("minmax", "zscore", "none")


def smd_root(root: str | Path | None = None) -> Path:
    """``root`` or ``$EDGEKD_DATA_DIR/smd/ServerMachineDataset``."""
    return Path(root).expanduser() if root else data_dir() / SMD_SUBDIR


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_machines(root: str | Path | None = None) -> list[str]:
    """Machine names with a file in ``train/``, in natural order (machine-1-9 before machine-1-10)."""
    folder = smd_root(root) / "train"
    if not folder.is_dir():
        return []
    return sorted((p.stem for p in folder.glob("*.txt")), key=_natural_key)


def read_table(path: str | Path, width: int | None = None, width_source: str = "") -> np.ndarray:
    """Read a comma-separated numeric text file into float32 ``(rows, width)``.

    Every row must have the same number of values (``width`` when given, else that of line 1) and
    every value must be a finite number; otherwise one error line names the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read ({e})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise EdgekdError(f"{path}: the file is empty; expected one comma-separated row per time step")
    counts = np.fromiter((ln.count(",") + 1 for ln in lines), dtype=np.int64, count=len(lines))
    ref = width if width is not None else int(counts[0])
    bad = np.flatnonzero(counts != ref)
    if bad.size:
        i = int(bad[0])
        if not lines[i].strip():
            raise EdgekdError(f"{path}:{i + 1}: empty line inside the data; remove it")
        like = f" like {width_source}" if width is not None and width_source else " like line 1"
        raise EdgekdError(
            f"{path}:{i + 1}: row has {counts[i]} values, expected {ref}{like}; all rows and files "
            "of a data set must have the same number of metrics"
        )
    try:
        values = np.array(",".join(lines).split(","), dtype=np.float64)
    except ValueError:
        for i, ln in enumerate(lines):
            for tok in ln.split(","):
                try:
                    float(tok)
                except ValueError:
                    raise EdgekdError(
                        f"{path}:{i + 1}: {tok.strip()!r} is not a number; every value must be numeric"
                    ) from None
        raise  # pragma: no cover  (numpy and float() disagree)
    finite = np.isfinite(values)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        raise EdgekdError(
            f"{path}:{k // ref + 1}: value {k % ref + 1} is {values[k]} (NaN or infinite); "
            "fill or drop that time step"
        )
    return values.reshape(len(lines), ref).astype(np.float32)


def read_labels(path: str | Path) -> np.ndarray:
    """One 0/1 label per line -> int64 ``(rows,)``."""
    path = Path(path)
    arr = read_table(path, width=1, width_source="a label file (one value per line)")[:, 0]
    bad = np.flatnonzero((arr != 0) & (arr != 1))
    if bad.size:
        raise EdgekdError(f"{path}:{int(bad[0]) + 1}: label {arr[bad[0]]:g} is not 0 or 1")
    return arr.astype(np.int64)


def read_interpretation(path: str | Path) -> list[tuple[int, int, list[int]]]:
    """``start-end:d1,d2,...`` lines -> ``[(start, end, [dims])]`` as written in the file."""
    path = Path(path)
    out = []
    for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not ln.strip():
            continue
        m = re.fullmatch(r"\s*(\d+)-(\d+):([\d,\s]+)", ln)
        if not m:
            raise EdgekdError(f"{path}:{i + 1}: expected 'start-end:dim,dim,...', got {ln.strip()!r}")
        dims = [int(d) for d in m.group(3).split(",") if d.strip()]
        out.append((int(m.group(1)), int(m.group(2)), dims))
    return out


@dataclass
class SmdMachine:
    """One machine's raw files: ``train`` (T, F), ``test`` (T', F), ``labels`` (T',) and the
    interpretation ranges (empty when the file is absent)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    interpretation: list[tuple[int, int, list[int]]] = field(default_factory=list)


def load_machine(name: str, root: str | Path | None = None, width: int | None = None) -> SmdMachine:
    """Read one machine's train/test/test_label (and interpretation_label when present)."""
    check_safe_name(name, "data set smd", "machine name")  # never a path: <root>/train/<name>.txt
    base = smd_root(root)
    train_path = base / "train" / f"{name}.txt"
    if not train_path.exists():
        found = list_machines(root)
        where = f"{base / 'train'} (EDGEKD_DATA_DIR={data_dir()})" if root is None else str(base / "train")
        raise EdgekdError(f"SMD machine {name!r} not found in {where}; found: {', '.join(found) or 'none'}")
    for sub in ("test", "test_label"):
        if not (base / sub / f"{name}.txt").exists():
            raise EdgekdError(
                f"{base / sub / f'{name}.txt'}: missing; SMD needs train/, test/ and test_label/"
            )
    train = read_table(train_path, width, f"the other machines ({width} metrics)" if width else "")
    test = read_table(
        base / "test" / f"{name}.txt", train.shape[1], f"{train_path} ({train.shape[1]} metrics)"
    )
    labels_path = base / "test_label" / f"{name}.txt"
    labels = read_labels(labels_path)
    if len(labels) != len(test):
        raise EdgekdError(
            f"{labels_path}: {len(labels)} labels but {base / 'test' / f'{name}.txt'} has {len(test)} "
            "time steps; there must be one label per test step"
        )
    interp_path = base / "interpretation_label" / f"{name}.txt"
    interp = read_interpretation(interp_path) if interp_path.exists() else []
    return SmdMachine(name, train, test, labels, interp)


def fit_normaliser(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(offset, scale)`` so that ``(x - offset) / scale`` is normalised.

    ``minmax``: offset = min, scale = max - min; ``zscore``: mean and std; ``none``: 0 and 1.
    A constant feature gets scale 1 (it is only shifted)."""
    if kind == "minmax":
        offset, scale = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    elif kind == "zscore":
        offset, scale = x.mean(axis=0), x.std(axis=0)
    elif kind == "none":
        offset, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    else:
        raise EdgekdError(f"data.options.normalise={kind!r}; valid: {', '.join(NORMALISATIONS)}")
    scale = np.where(scale > 1e-12, scale, 1.0)
    return offset.astype(np.float32), scale.astype(np.float32)


def _feature_index(features: list[int], width: int, path: Path) -> list[int]:
    """``features`` as distinct column indices of a ``width``-metric file ``path`` (named in the error)."""
    idx = [int(f) for f in features]
    bad = [f for f in idx if not 0 <= f < width]
    if not idx or bad or len(set(idx)) != len(idx):
        why = f"{bad} out of range 0..{width - 1}" if bad else "empty or repeated"
        raise EdgekdError(
            f"data.options.features: {why} for {path} ({width} metrics); list distinct 0-based column indices"
        )
    return idx


@dataclass
class MachineSeries:
    """One machine after splitting and normalisation (float32 series, per-step test labels)."""

    name: str
    fit: np.ndarray  # (T_fit, F)
    val: np.ndarray  # (T_val, F)
    test: np.ndarray  # (T_test, F)
    labels: np.ndarray  # (T_test,)
    offset: np.ndarray
    scale: np.ndarray


@dataclass
class SmdData:
    """SMD split into fit / validation / test series per machine, with the window settings.

    ``windows(part)`` gives ``(windows, starts, machine_index)`` for ``part`` in fit/val/test;
    the training windows use ``stride``, validation and test windows ``test_stride`` and cover
    every step, so that per-step scores exist for each of them (see ``edgekd.data.windows``).
    """

    machines: list[MachineSeries]
    length: int
    stride: int
    test_stride: int
    val_fraction: float
    normalise: str
    root: str
    features: list[int] | None = None

    @property
    def num_features(self) -> int:
        return int(self.machines[0].fit.shape[1])

    def select(self, features: list[int]) -> SmdData:
        """Only these metric columns (0-based, in this order) of every machine; the statistics are
        per column, so they are those of the full file's column."""
        idx = _feature_index(
            features, self.num_features, Path(self.root) / "train" / f"{self.machines[0].name}.txt"
        )
        machines = [MachineSeries(m.name, m.fit[:, idx], m.val[:, idx], m.test[:, idx], m.labels,
                                  m.offset[idx], m.scale[idx]) for m in self.machines]  # fmt: skip
        return replace(self, machines=machines, features=idx)

    def windows(self, part: str, copy: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows of every machine, concatenated; one machine and ``copy=False``: a strided view."""
        if part not in ("fit", "val", "test"):
            raise EdgekdError(f"SmdData.windows: part={part!r}; valid: fit, val, test")
        stride = self.stride if part == "fit" else self.test_stride
        xs, starts, owner = [], [], []
        for i, m in enumerate(self.machines):
            w, s = sliding_windows(getattr(m, part), self.length, stride, cover_end=part != "fit", copy=copy)
            xs.append(w)
            starts.append(s)
            owner.append(np.full(len(s), i, dtype=np.int64))
        if len(xs) == 1:
            return xs[0], starts[0], owner[0]
        return np.concatenate(xs), np.concatenate(starts), np.concatenate(owner)

    def describe(self) -> dict[str, Any]:
        return {
            "task": "reconstruction",
            "machines": [m.name for m in self.machines],
            "length": self.length,
            "stride": self.stride,
            "test_stride": self.test_stride,
            "val_fraction": self.val_fraction,
            "normalise": self.normalise,
            "features": self.features if self.features is not None else "all",
            "normalisation_source": "fit part of each machine's training series (validation excluded)",
            "steps": {
                m.name: {
                    "fit": len(m.fit),
                    "val": len(m.val),
                    "test": len(m.test),
                    "test_anomalies": int(m.labels.sum()),
                }
                for m in self.machines
            },  # fmt: skip
        }


def _as_list(machines: str | list[str] | None, root: str | Path | None) -> list[str]:
    """The machine names asked for (all found for ``None``/``"all"``); every one must exist."""
    found = list_machines(root)
    if machines is None or machines == "all":
        if not found:
            raise EdgekdError(
                f"no SMD machine files in {smd_root(root) / 'train'} (EDGEKD_DATA_DIR={data_dir()}); "
                "expected smd/ServerMachineDataset/train/<machine>.txt"
            )
        return found
    names = list(machines) if isinstance(machines, (list, tuple)) else [machines]
    if not names:
        raise EdgekdError("data.options.machines is empty; name at least one machine, e.g. [machine-1-6]")
    for i, n in enumerate(names):
        check_safe_name(n, "data set smd", f"data.options.machines[{i}]")
    missing = [n for n in names if n not in found]
    if missing:
        load_machine(missing[0], root)  # raises: names the folder and the machines found
    return names


def load_smd(
    machines: str | list[str] | None = None,
    *,
    length: int = 32,
    stride: int = 1,
    test_stride: int = 1,
    val_fraction: float = 0.3,
    normalise: str = "minmax",
    features: list[int] | None = None,
    root: str | Path | None = None,
) -> SmdData:
    """Load, split (validation = the last ``val_fraction`` of each training series) and normalise.

    ``features`` keeps only those metric columns (0-based, in the given order), e.g. the sensors a
    small device has; the statistics of each kept column are those of the full file's column.
    """
    if not 0.0 < val_fraction < 1.0:
        raise EdgekdError(f"data.options.val_fraction={val_fraction}: must be in (0, 1)")
    if normalise not in NORMALISATIONS:
        raise EdgekdError(f"data.options.normalise={normalise!r}; valid: {', '.join(NORMALISATIONS)}")
    names = _as_list(machines, root)
    out: list[MachineSeries] = []
    width: int | None = None
    base = smd_root(root)
    for name in names:
        m = load_machine(name, root, width)
        width = m.train.shape[1]
        if features is not None:
            _feature_index(features, width, base / "train" / f"{name}.txt")  # before the length checks
        n_val = int(round(len(m.train) * val_fraction))
        n_fit = len(m.train) - n_val
        for part, n, path in (("fit", n_fit, base / "train"), ("validation", n_val, base / "train"),
                              ("test", len(m.test), base / "test")):  # fmt: skip
            if n < length:
                raise EdgekdError(
                    f"{path / f'{name}.txt'}: the {part} part has {n} time steps, shorter than the "
                    f"window length {length}; use a shorter data.options.length"
                )
        window_starts(n_fit, length, stride)  # validates length/stride
        fit_raw, val_raw = m.train[:n_fit], m.train[n_fit:]
        offset, scale = fit_normaliser(fit_raw, normalise)

        def norm(x: np.ndarray, o: np.ndarray = offset, s: np.ndarray = scale) -> np.ndarray:
            return ((x - o) / s).astype(np.float32)

        out.append(MachineSeries(name, norm(fit_raw), norm(val_raw), norm(m.test), m.labels, offset, scale))
    data = SmdData(out, length, stride, test_stride, val_fraction, normalise, str(base))
    return data if features is None else data.select(features)


@dataclass
class SmdRawData(RawData):
    """``RawData`` for a reconstruction task, with the validation windows made by the loader.

    ``x_*`` are windows ``(N, length, features)``; ``y_test`` marks windows holding an anomalous
    step; per-step labels and scoring live in ``smd`` (an ``SmdData``). The registry's random,
    stratified validation split and global normalisation must not be applied to it: the base
    class's ``x_val``/``y_val`` are set and ``normalised`` is true (per machine; ``scale`` is 1).
    """

    smd: SmdData | None = None


@register_dataset("smd")
def smd(
    machines: str | list[str] | None = None,
    length: int = 32,
    stride: int = 1,
    test_stride: int = 1,
    val_fraction: float = 0.3,
    normalise: str = "minmax",
    features: list[int] | None = None,
    privileged: bool = False,
    root: str | None = None,
) -> SmdRawData:
    """SMD machines (one name, a list, or all found) as reconstruction windows ``(N, length, 38)``.

    ``features`` keeps those metric columns for ``x`` (the sensors a small device has); with
    ``privileged: true`` the windows of all the machine's metrics are also given as the privileged
    input ``all_metrics`` (training and test, aligned with ``x``; ``teacher: {input: all_metrics}``),
    normalised with the same per-column statistics. The student and its export only see ``x``.
    """
    kw = dict(length=length, stride=stride, test_stride=test_stride, val_fraction=val_fraction,
              normalise=normalise, root=root)  # fmt: skip
    if privileged and features is None:
        raise EdgekdError(
            "data.options.privileged=true needs data.options.features (the student's metric columns); "
            "the privileged input 'all_metrics' holds every metric"
        )
    extra_train: dict[str, np.ndarray] = {}
    extra_test: dict[str, np.ndarray] = {}
    if not privileged:
        data = load_smd(machines, features=features, **kw)
    else:
        full = load_smd(machines, **kw)  # read once: the student's columns are a selection of it
        data = full.select(features)
        extra_train["all_metrics"] = full.windows("fit")[0]  # a writable copy: the engine feeds it to torch
        extra_test["all_metrics"] = full.windows("test", copy=False)[0]
    x_fit, _, _ = data.windows("fit", copy=False)
    x_val, _, _ = data.windows("val", copy=False)
    x_test, test_starts, owner = data.windows("test", copy=False)
    y_test = np.concatenate(
        [window_labels(m.labels, test_starts[owner == i], length) for i, m in enumerate(data.machines)]
    )
    return SmdRawData(
        x_train=x_fit, y_train=np.zeros(len(x_fit), np.int64), x_test=x_test, y_test=y_test,
        class_names=["normal", "anomaly"], source=data.root, scale=1.0, task="reconstruction",
        x_val=x_val, y_val=np.zeros(len(x_val), np.int64), smd=data, normalised=True,
        extra_train=extra_train, extra_test=extra_test,
    )  # fmt: skip


def smd_splits(seed: int = 0, **options: Any) -> DataSplits:
    """The ``DataSplits`` a reconstruction run trains on, built from the ``smd`` loader's own split.

    For the engine: ``load_data`` must not re-split or re-normalise SMD (validation is the end of
    each training series, statistics are per machine), so it should hand ``smd`` data here. Inputs
    are already normalised: ``mean = 0``, ``std = 1``, ``scale = 1``; the per-machine, per-metric
    statistics a device must apply are in ``info["smd_normalisation"]``.
    """
    raw = smd(**options)
    data = raw.smd
    info: dict[str, Any] = {
        "seed": seed,
        "task": "reconstruction",
        "load_args": {"name": "smd", "seed": seed, "options": dict(options)},
        "smd": data.describe(),
        "smd_normalisation": {
            m.name: {
                "offset": m.offset.tolist(),
                "scale": m.scale.tolist(),
                "formula": "(raw - offset) / scale",
            }
            for m in data.machines
        },
    }
    return DataSplits(
        name="smd", train=ArrayDataset(raw.x_train, raw.y_train), val=ArrayDataset(raw.x_val, raw.y_val),
        test=ArrayDataset(raw.x_test, raw.y_test), num_classes=2, input_shape=tuple(raw.x_train.shape[1:]),
        class_names=raw.class_names, mean=0.0, std=1.0, scale=1.0, source=raw.source, info=info,
    )  # fmt: skip
