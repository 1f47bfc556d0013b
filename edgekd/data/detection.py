"""Detection data: several objects per image, each a box and a class.

Layout (every detection data set, every split): images ``x`` (N, C, H, W); ``targets["boxes"]`` float32
(N, K, 4) as ``x0, y0, x1, y1`` in input pixels, continuous coordinates (pixel ``i`` covers ``[i, i + 1)``,
so a box of the pixels ``c0..c1`` is ``x0 = c0, x1 = c1 + 1``); ``targets["classes"]`` int64 (N, K),
``-1`` (with a zero box) beyond each image's objects; ``y`` = the number of objects per image. K is the
largest number of objects an image of the data set may hold (padded arrays batch like ``x``).

Generated sets (``mnist-detection``, ``fashion-mnist-detection``): 1..``max_objects`` digits or garments
pasted (pixel-wise maximum) at random positions and sizes on a black ``canvas`` x ``canvas`` image, with
a fixed seed, so the splits are the same in every run: train and validation objects come from disjoint
parts of the source's training split, test objects from its test split. The box is the object's tight
box (pixels >= ``INK`` after resizing; fainter ones are cleared), and boxes of one image do not overlap
by more than ``max_iou``. The splits are the loader's own (``data.val_fraction`` / ``test_fraction`` do not
apply); the option ``seed`` fixes the generation, not the recipe's seed.

Annotation files (``detection-npz``): an ``.npz`` with ``images``, ``boxes``, ``classes`` (and optionally
``images_test``, ``boxes_test``, ``classes_test``), validated as untrusted input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.loaders import FASHION_CLASSES, load_idx_set
from edgekd.data.registry import RawData, register_dataset
from edgekd.errors import EdgekdError
from edgekd.files import MAX_NPZ_BYTES, load_npz
from edgekd.metrics.detection import box_iou

MAX_OBJECTS = 100  # per image: COCO's detection limit, also the cap for annotation files
MAX_SIDE = 4096  # pixels, for annotation files
INK = 32  # a resized object's pixels below this (of 255) are cleared; the box holds the rest
ATTEMPTS = 30  # tries to place one object before it is left out


def object_counts(classes: np.ndarray) -> np.ndarray:
    """Objects per image of a ``(N, K)`` class array padded with ``-1``."""
    return (np.asarray(classes) >= 0).sum(axis=1).astype(np.int64)


def _resized(obj: np.ndarray, size: int) -> np.ndarray:
    """A uint8 object resized to ``size`` x ``size`` (bilinear), faint pixels cleared."""
    from PIL import Image

    out = np.asarray(Image.fromarray(obj).resize((size, size), Image.BILINEAR), dtype=np.uint8).copy()
    out[out < INK] = 0
    return out


def _tight_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of the non-zero pixels (exclusive ends), None when there are none."""
    rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def paste_objects(
    objects: np.ndarray,
    labels: np.ndarray,
    n_images: int,
    *,
    canvas: int,
    max_objects: int,
    sizes: tuple[int, int],
    max_iou: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_images`` canvases with 1..``max_objects`` of ``objects`` (M, h, w) uint8 each: images
    (n, 1, canvas, canvas) uint8, boxes (n, K, 4) float32, classes (n, K) int64 (-1 padded).

    Objects are drawn in a seeded permutation (cycled when more are needed), sizes uniformly in
    ``sizes`` (the side of the resized source image), positions uniformly where the tight box lies inside
    the canvas and overlaps no earlier box by more than ``max_iou``; an object that finds no place in
    ``ATTEMPTS`` tries is left out (the first one always fits)."""
    images = np.zeros((n_images, 1, canvas, canvas), np.uint8)
    boxes = np.zeros((n_images, max_objects, 4), np.float32)
    classes = np.full((n_images, max_objects), -1, np.int64)
    order = rng.permutation(len(objects))
    drawn = 0
    for i in range(n_images):
        placed: list[np.ndarray] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            src = int(order[drawn % len(order)])
            drawn += 1
            obj = _resized(objects[src], int(rng.integers(sizes[0], sizes[1] + 1)))
            tight = _tight_box(obj)
            if tight is None:
                continue
            spot = _place(obj.shape[0], tight, placed, canvas, max_iou, rng)
            if spot is None:
                continue
            x, y = spot
            _paste(images[i, 0], obj, x, y)
            box = np.array([x + tight[0], y + tight[1], x + tight[2], y + tight[3]], np.float32)
            boxes[i, len(placed)], classes[i, len(placed)] = box, int(labels[src])
            placed.append(box)
    return images, boxes, classes


def _place(side: int, tight: tuple[int, int, int, int], placed: list[np.ndarray], canvas: int,
           max_iou: float, rng: np.random.Generator) -> tuple[int, int] | None:  # fmt: skip
    """A top-left corner for a ``side``-pixel object whose tight box lies inside the canvas."""
    x_lo, x_hi = -tight[0], canvas - tight[2]
    y_lo, y_hi = -tight[1], canvas - tight[3]
    if x_hi < x_lo or y_hi < y_lo:
        return None
    others = np.array(placed, np.float32).reshape(-1, 4)
    for _ in range(ATTEMPTS):
        x, y = int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(y_lo, y_hi + 1))
        box = np.array([x + tight[0], y + tight[1], x + tight[2], y + tight[3]], np.float32)
        if not len(others) or box_iou(box[None], others).max() <= max_iou:
            return x, y
    return None


def _paste(image: np.ndarray, obj: np.ndarray, x: int, y: int) -> None:
    """``image = max(image, obj)`` with ``obj``'s top-left at ``(x, y)``, clipped to the image (the
    clipped part is empty border: the tight box lies inside)."""
    h, w = image.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + obj.shape[1], w), min(y + obj.shape[0], h)
    region = image[y0:y1, x0:x1]
    np.maximum(region, obj[y0 - y : y1 - y, x0 - x : x1 - x], out=region)


def _check_generator(canvas: int, max_objects: int, sizes: tuple[int, int], counts: dict[str, int],
                     max_iou: float) -> None:  # fmt: skip
    where = "data.options"
    if not 16 <= canvas <= 1024:
        raise EdgekdError(f"{where}.canvas={canvas}: must be in 16..1024 pixels")
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise EdgekdError(f"{where}.max_objects={max_objects}: must be in 1..{MAX_OBJECTS}")
    if not 4 <= sizes[0] <= sizes[1] <= canvas:
        raise EdgekdError(
            f"{where}.min_size={sizes[0]}, max_size={sizes[1]}: need 4 <= min_size <= max_size <= canvas ({canvas})"
        )
    for key, n in counts.items():
        if not 1 <= n <= 1_000_000:
            raise EdgekdError(f"{where}.{key}={n}: must be in 1..1000000")
    if not 0.0 <= max_iou < 1.0:
        raise EdgekdError(f"{where}.max_iou={max_iou}: must be in [0, 1)")


def generated_detection(
    source: str, class_names: list[str], *, canvas: int, max_objects: int, train_images: int,
    val_images: int, test_images: int, min_size: int | None, max_size: int | None, max_iou: float,
    seed: int, root: str | None,
) -> RawData:  # fmt: skip
    """Detection splits pasted from the IDX data set ``source`` (see the module docstring)."""
    sizes = (min_size or max(4, canvas // 4), max_size or max(4, canvas // 2))
    counts = {"train_images": train_images, "val_images": val_images, "test_images": test_images}
    _check_generator(canvas, max_objects, sizes, counts, max_iou)
    raw = load_idx_set(source, class_names, root)
    x_src, y_src = raw.x_train[:, 0], raw.y_train
    val_part = np.random.default_rng([seed, 1]).permutation(len(y_src))
    n_val_src = len(y_src) // 10  # the last tenth of a fixed permutation feeds validation only
    val_idx, train_idx = np.sort(val_part[:n_val_src]), np.sort(val_part[n_val_src:])
    common = {"canvas": canvas, "max_objects": max_objects, "sizes": sizes, "max_iou": max_iou}
    parts = {
        "train": paste_objects(x_src[train_idx], y_src[train_idx], train_images, rng=np.random.default_rng([seed, 2]), **common),
        "val": paste_objects(x_src[val_idx], y_src[val_idx], val_images, rng=np.random.default_rng([seed, 3]), **common),
        "test": paste_objects(raw.x_test[:, 0], raw.y_test, test_images, rng=np.random.default_rng([seed, 4]), **common),
    }  # fmt: skip
    (xtr, btr, ctr), (xva, bva, cva), (xte, bte, cte) = parts["train"], parts["val"], parts["test"]
    return RawData(
        xtr, object_counts(ctr), xte, object_counts(cte), list(class_names),
        f"{raw.source} pasted on {canvas}x{canvas} canvases (seed {seed})", scale=255.0, task="detection",
        x_val=xva, y_val=object_counts(cva), targets_train={"boxes": btr, "classes": ctr},
        targets_test={"boxes": bte, "classes": cte}, targets_val={"boxes": bva, "classes": cva},
    )  # fmt: skip


@register_dataset("mnist-detection")
def mnist_detection(
    canvas: int = 96, max_objects: int = 4, train_images: int = 8000, val_images: int = 1000,
    test_images: int = 1000, min_size: int | None = None, max_size: int | None = None,
    max_iou: float = 0.0, seed: int = 0, root: str | None = None,
) -> RawData:  # fmt: skip
    """MNIST digits pasted on ``canvas`` x ``canvas`` images (1..``max_objects`` each), with boxes."""
    return generated_detection("mnist", [str(i) for i in range(10)], canvas=canvas, max_objects=max_objects,
                               train_images=train_images, val_images=val_images, test_images=test_images,
                               min_size=min_size, max_size=max_size, max_iou=max_iou, seed=seed, root=root)  # fmt: skip


@register_dataset("fashion-mnist-detection")
def fashion_mnist_detection(
    canvas: int = 96, max_objects: int = 4, train_images: int = 8000, val_images: int = 1000,
    test_images: int = 1000, min_size: int | None = None, max_size: int | None = None,
    max_iou: float = 0.0, seed: int = 0, root: str | None = None,
) -> RawData:  # fmt: skip
    """Fashion-MNIST garments pasted on ``canvas`` x ``canvas`` images (1..``max_objects`` each), with boxes."""
    return generated_detection("fashion-mnist", FASHION_CLASSES, canvas=canvas, max_objects=max_objects,
                               train_images=train_images, val_images=val_images, test_images=test_images,
                               min_size=min_size, max_size=max_size, max_iou=max_iou, seed=seed, root=root)  # fmt: skip


# --- annotation files ------------------------------------------------------------------------------
def check_images(images: np.ndarray, source: str, key: str) -> np.ndarray:
    """Images ``(N, H, W)`` or ``(N, C, H, W)`` of numbers as ``(N, C, H, W)``, or one error line."""
    what = f"{source}: array {key!r}"
    if images.ndim not in (3, 4) or len(images) == 0 or images.dtype.kind not in "uif":
        raise EdgekdError(
            f"{what} has shape {images.shape} {images.dtype}; expected numbers (N, H, W) or (N, C, H, W)"
        )
    images = images[:, None] if images.ndim == 3 else images
    if images.shape[1] > 4 or max(images.shape[2:]) > MAX_SIDE or min(images.shape[2:]) < 1:
        raise EdgekdError(
            f"{what} has shape {images.shape}; expected (N, C, H, W) with C <= 4 and sides 1..{MAX_SIDE} pixels"
        )
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise EdgekdError(f"{what} holds NaN or infinite values")
    return images


def check_detection_targets(
    boxes: np.ndarray, classes: np.ndarray, images: np.ndarray, source: str, suffix: str = "",
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``boxes`` float32 (N, K, 4) and ``classes`` int64 (N, K) checked against ``images`` (N, C, H, W):
    one EdgekdError line naming ``source`` and the key otherwise. Rows with class -1 are padding (their
    boxes are zeroed); real rows need ``0 <= x0 < x1 <= W`` and ``0 <= y0 < y1 <= H``."""
    bk, ck = f"boxes{suffix}", f"classes{suffix}"
    n, (h, w) = len(images), images.shape[2:]
    if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4 or boxes.dtype.kind not in "uif":
        raise EdgekdError(
            f"{source}: array {bk!r} has shape {boxes.shape} {boxes.dtype}; expected numbers ({n}, K, 4)"
        )
    if not 1 <= boxes.shape[1] <= MAX_OBJECTS:
        raise EdgekdError(
            f"{source}: array {bk!r} holds {boxes.shape[1]} boxes per image; at most {MAX_OBJECTS}"
        )
    if classes.shape != boxes.shape[:2] or classes.dtype.kind not in "uif":
        raise EdgekdError(
            f"{source}: array {ck!r} has shape {classes.shape} {classes.dtype}; expected integers {boxes.shape[:2]}"
        )
    if classes.dtype.kind == "f" and not (
        np.isfinite(classes).all() and (classes == np.round(classes)).all()
    ):
        raise EdgekdError(
            f"{source}: array {ck!r} holds non-integer values; expected classes 0, 1, ... and -1 for padding"
        )
    classes = classes.astype(np.int64)
    if (classes < -1).any():
        raise EdgekdError(
            f"{source}: array {ck!r} holds {int(classes.min())}; classes are 0, 1, ... and -1 for padding"
        )
    if num_classes is not None and (classes >= num_classes).any():
        raise EdgekdError(
            f"{source}: array {ck!r} holds class {int(classes.max())} but there are {num_classes} classes"
        )
    boxes = boxes.astype(np.float32)
    real = classes >= 0
    b = boxes[real]
    if not np.isfinite(b).all():
        raise EdgekdError(f"{source}: array {bk!r} holds NaN or infinite coordinates")
    bad = (
        (b[:, 0] < 0)
        | (b[:, 1] < 0)
        | (b[:, 2] > w)
        | (b[:, 3] > h)
        | (b[:, 2] <= b[:, 0])
        | (b[:, 3] <= b[:, 1])
    )
    if bad.any():
        img, obj = np.argwhere(real)[int(np.flatnonzero(bad)[0])]
        raise EdgekdError(
            f"{source}: array {bk!r} image {img} box {obj} is {b[bad][0].tolist()}; need 0 <= x0 < x1 <= {w} "
            f"and 0 <= y0 < y1 <= {h} (x0, y0, x1, y1 in pixels)"
        )
    boxes[~real] = 0.0
    return boxes, classes


@register_dataset("detection-npz")
def detection_npz(path: str, scale: float | None = None, class_names: list[str] | None = None) -> RawData:
    """The user's boxes: an ``.npz`` with ``images`` (N, [C,] H, W), ``boxes`` (N, K, 4) ``x0, y0, x1, y1``
    in pixels and ``classes`` (N, K) with -1 padding; optional ``images_test``/``boxes_test``/
    ``classes_test``. ``scale`` divides the raw values (default 255 for uint8 images, else 1)."""
    p = Path(path).expanduser()
    arrays = load_npz(p, MAX_NPZ_BYTES, "a detection npz data set")
    known = len(class_names) if class_names else None
    splits = {}
    for suffix in ("", "_test"):
        keys = [f"images{suffix}", f"boxes{suffix}", f"classes{suffix}"]
        present = [k for k in keys if k in arrays]
        if not present and suffix:
            continue
        if len(present) != 3:
            missing = next(k for k in keys if k not in arrays)
            raise EdgekdError(f"{p}: missing array {missing!r} (found {', '.join(arrays) or 'none'})")
        images = check_images(arrays[keys[0]], str(p), keys[0])
        boxes, classes = check_detection_targets(
            arrays[keys[1]], arrays[keys[2]], images, str(p), suffix, known
        )
        splits[suffix] = (images, boxes, classes)
    x, boxes, classes = splits[""]
    test = splits.get("_test")
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise EdgekdError(
            f"{p}: array 'images_test' has images {test[0].shape[1:]}, 'images' {x.shape[1:]}; make them equal"
        )
    n_cls = int(max(c.max() for _, _, c in splits.values())) + 1
    names = class_names or [str(i) for i in range(max(n_cls, 1))]
    if scale is None:
        scale = 255.0 if x.dtype == np.uint8 else 1.0
    return RawData(
        x, object_counts(classes), None if test is None else test[0],
        None if test is None else object_counts(test[2]), names, str(p), scale=float(scale), task="detection",
        targets_train={"boxes": boxes, "classes": classes},
        targets_test={} if test is None else {"boxes": test[1], "classes": test[2]},
    )  # fmt: skip
