"""Built-in data sets: mnist, fashion-mnist (IDX), digits (scikit-learn, needs no files), npz and
image folders for the user's own data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.idx import find_idx, read_idx
from edgekd.data.registry import RawData, check_labels, data_dir, register_dataset
from edgekd.errors import EdgekdError
from edgekd.files import MAX_NPZ_BYTES, load_npz

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]


def load_idx_set(name: str, class_names: list[str], root: str | None) -> RawData:
    """The four IDX files of ``name`` (``root`` or ``$EDGEKD_DATA_DIR/<name>``) as uint8 (N, 1, 28, 28)."""
    folder = Path(root).expanduser() if root else data_dir() / name
    paths = [find_idx(folder, stem) for stem in IDX_FILES]
    missing = [stem for stem, p in zip(IDX_FILES, paths) if p is None]
    if missing:
        raise EdgekdError(
            f"data set {name!r} not found in {folder} (EDGEKD_DATA_DIR={data_dir()}): expected "
            f"{', '.join(m + '[.gz]' for m in missing)}; set EDGEKD_DATA_DIR to the folder holding {name}/"
        )
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    if xtr.ndim != 3 or len(xtr) != len(ytr) or xte.ndim != 3 or len(xte) != len(yte):
        raise EdgekdError(f"{folder}: IDX images and labels do not match in count or shape")
    return RawData(xtr[:, None], ytr, xte[:, None], yte, class_names, str(folder), scale=255.0)


@register_dataset("mnist")
def mnist(root: str | None = None) -> RawData:
    """MNIST from ``$EDGEKD_DATA_DIR/mnist/`` (the four standard IDX files)."""
    return load_idx_set("mnist", [str(i) for i in range(10)], root)


@register_dataset("fashion-mnist")
def fashion_mnist(root: str | None = None) -> RawData:
    """Fashion-MNIST from ``$EDGEKD_DATA_DIR/fashion-mnist/``."""
    return load_idx_set("fashion-mnist", FASHION_CLASSES, root)


@register_dataset("digits")
def digits() -> RawData:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16); needs no data dir."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]
    return RawData(
        x,
        d.target.astype(np.int64),
        None,
        None,
        [str(i) for i in range(10)],
        "sklearn.datasets.load_digits",
        scale=16.0,
    )


@register_dataset("npz")
def npz(path: str, scale: float = 1.0, class_names: list[str] | None = None) -> RawData:
    """The user's own arrays: an ``.npz`` with ``x`` (N, C, H, W) or (N, F) and integer ``y``; optional
    ``x_test``/``y_test``; optional ``task`` (``classification`` or ``reconstruction``: then ``y`` may be
    left out, or hold anomaly labels 0/1); optional privileged inputs ``priv_<name>`` (and
    ``priv_<name>_test``) that only a teacher reads. Loaded with ``allow_pickle=False``."""
    p = Path(path).expanduser()
    arrays = load_npz(p, MAX_NPZ_BYTES, "an npz data set")
    task = str(arrays.pop("task")) if "task" in arrays else "classification"
    if "x" not in arrays:
        raise EdgekdError(f"{p}: missing array 'x' (found {', '.join(arrays) or 'none'})")
    if "y" not in arrays:
        if task != "reconstruction":
            raise EdgekdError(f"{p}: missing array 'y' (found {', '.join(arrays) or 'none'})")
        arrays["y"] = np.zeros(len(arrays["x"]), np.int64)
        if "x_test" in arrays and "y_test" not in arrays:
            arrays["y_test"] = np.zeros(len(arrays["x_test"]), np.int64)
    x = arrays["x"]
    if x.ndim < 2 or len(x) == 0 or x.dtype.kind not in "iuf":
        raise EdgekdError(
            f"{p}: array 'x' has shape {x.shape} {x.dtype}; expected numbers, (N, C, H, W) or (N, F)"
        )
    known = len(class_names) if class_names else None
    y = check_labels(arrays["y"], str(p), "y", len(x), known)
    y_test = None
    if "y_test" in arrays:
        rows = len(arrays["x_test"]) if "x_test" in arrays else None
        y_test = arrays["y_test"] = check_labels(arrays["y_test"], str(p), "y_test", rows, known)
    n_cls = int(max(y.max(), y.max() if y_test is None else y_test.max())) + 1
    names = class_names or [str(i) for i in range(max(n_cls, 1))]
    extra_train = {k[5:]: v for k, v in arrays.items() if k.startswith("priv_") and not k.endswith("_test")}
    extra_test = {k[5:-5]: v for k, v in arrays.items() if k.startswith("priv_") and k.endswith("_test")}
    return RawData(x, y, arrays.get("x_test"), arrays.get("y_test"), names, str(p), scale=scale, task=task,
                   extra_train=extra_train, extra_test=extra_test)  # fmt: skip


@register_dataset("image-folder")
def image_folder(path: str, size: list[int] | None = None, grayscale: bool = True) -> RawData:
    """``path/<class>/*.png|jpg``: one sub-folder per class, resized to ``size`` (H, W)."""
    from PIL import Image

    root = Path(path).expanduser()
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not classes:
        raise EdgekdError(f"{root}: expected one sub-folder per class with images inside")
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
                continue
            img = Image.open(f).convert("L" if grayscale else "RGB")
            if size:
                img = img.resize((size[1], size[0]))
            a = np.asarray(img, dtype=np.uint8)
            xs.append(a[None] if grayscale else a.transpose(2, 0, 1))
            ys.append(ci)
    if not xs:
        raise EdgekdError(f"{root}: no images found")
    return RawData(np.stack(xs), np.array(ys), None, None, classes, str(root), scale=255.0)
