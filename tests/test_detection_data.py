"""edgekd.data.detection: the generated multi-object sets (on fake IDX files, so the tests need no data
directory, and on the real MNIST when EDGEKD_DATA_DIR has it) and the detection npz loader."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from edgekd.data import load_data
from edgekd.data.detection import detection_npz, mnist_detection, object_counts, paste_objects
from edgekd.errors import EdgekdError
from edgekd.metrics.detection import box_iou

SMALL = {"canvas": 48, "train_images": 60, "val_images": 20, "test_images": 20}


def write_idx(path: Path, array: np.ndarray) -> None:
    head = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_root(tmp_path) -> Path:
    """50 training images, each a 16x16 square of its own value 50 + i (labels i % 3), and 10 test images
    with the value 250: every pasted object tells which source image it came from."""
    root = tmp_path / "mnist"
    root.mkdir()
    train = np.zeros((50, 28, 28), np.uint8)
    for i in range(50):
        train[i, 6:22, 6:22] = 50 + i
    test = np.zeros((10, 28, 28), np.uint8)
    test[:, 6:22, 6:22] = 250
    write_idx(root / "train-images-idx3-ubyte.gz", train)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(50) % 3)
    write_idx(root / "t10k-images-idx3-ubyte.gz", test)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 3)
    return root


def _sources(images: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> set[int]:
    """The value inside each object (the source image's square)."""
    out = set()
    for img, bs, cs in zip(images[:, 0], boxes, classes):
        for b, c in zip(bs, cs):
            if c >= 0:
                x0, y0, x1, y1 = (int(v) for v in b)
                out.add(int(img[(y0 + y1) // 2, (x0 + x1) // 2]))
    return out


def test_generated_set_is_fixed_tight_and_split_by_source(fake_root):
    raw = mnist_detection(root=str(fake_root), **SMALL)
    again = mnist_detection(root=str(fake_root), **SMALL)
    other = mnist_detection(root=str(fake_root), seed=1, **SMALL)
    assert np.array_equal(raw.x_train, again.x_train) and not np.array_equal(raw.x_train, other.x_train)
    assert (
        raw.task == "detection"
        and raw.x_train.shape == (60, 1, 48, 48)
        and raw.x_val.shape == (20, 1, 48, 48)
    )
    for x, t, y in ((raw.x_train, raw.targets_train, raw.y_train), (raw.x_val, raw.targets_val, raw.y_val),
                    (raw.x_test, raw.targets_test, raw.y_test)):  # fmt: skip
        boxes, classes = t["boxes"], t["classes"]
        assert boxes.shape == (len(x), 4, 4) and classes.shape == (len(x), 4) and boxes.dtype == np.float32
        assert np.array_equal(y, object_counts(classes)) and y.min() >= 1 and y.max() <= 4
        assert ((classes >= 0) == (np.arange(4) < y[:, None])).all()  # objects first, then -1 padding
        for img, bs, n in zip(x[:, 0], boxes, y):
            inside = np.zeros(img.shape, bool)
            for b in bs[:n]:
                x0, y0, x1, y1 = (int(v) for v in b)
                assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
                assert img[y0, x0:x1].any() and img[y1 - 1, x0:x1].any()  # tight: ink on every side
                assert img[y0:y1, x0].any() and img[y0:y1, x1 - 1].any()
                inside[y0:y1, x0:x1] = True
            assert not img[~inside].any()  # no ink outside the boxes
            iou = box_iou(bs[:n], bs[:n])
            assert np.allclose(iou, np.eye(n))  # max_iou 0: objects do not overlap
    train, val, test = (_sources(raw.x_train, **raw.targets_train), _sources(raw.x_val, **raw.targets_val),
                        _sources(raw.x_test, **raw.targets_test))  # fmt: skip
    assert test == {250} and 250 not in train | val  # test objects from the test split only
    assert not train & val and len(val) <= 5  # validation from its own tenth of the training split


def test_object_sizes_and_count_follow_the_options(fake_root):
    raw = mnist_detection(root=str(fake_root), canvas=64, max_objects=2, min_size=28, max_size=28,
                          train_images=30, val_images=5, test_images=5)  # fmt: skip
    boxes, classes = raw.targets_train["boxes"], raw.targets_train["classes"]
    real = classes >= 0
    assert classes.shape == (30, 2) and real[:, 0].all()
    sides = (boxes[real][:, 2:] - boxes[real][:, :2]).ravel()
    assert (sides == 16).all()  # a 28-pixel object keeps its 16-pixel square
    assert set(classes[real].tolist()) <= {0, 1, 2}


def test_paste_objects_places_exact_boxes_for_solid_objects():
    rng = np.random.default_rng(0)
    objects = np.full((3, 8, 8), 200, np.uint8)
    images, boxes, classes = paste_objects(objects, np.array([4, 5, 6]), 10, canvas=32, max_objects=3,
                                           sizes=(8, 8), max_iou=0.0, rng=rng)  # fmt: skip
    for img, bs, cs in zip(images[:, 0], boxes, classes):
        real = cs >= 0
        assert real.any() and set(cs[real].tolist()) <= {4, 5, 6}
        assert (img > 0).sum() == 64 * real.sum()  # solid 8x8 squares, no overlap
        for b in bs[real]:
            assert (
                b[2] - b[0] == 8
                and b[3] - b[1] == 8
                and (img[int(b[1]) : int(b[3]), int(b[0]) : int(b[2])] == 200).all()
            )


@pytest.mark.parametrize(
    "options, key",
    [({"canvas": 8}, "canvas"), ({"max_objects": 0}, "max_objects"), ({"min_size": 60, "max_size": 50}, "min_size"),
     ({"train_images": 0}, "train_images"), ({"max_iou": 1.0}, "max_iou")],
)  # fmt: skip
def test_generator_options_are_checked_in_one_line(options, key, fake_root):
    with pytest.raises(EdgekdError, match=f"data.options.{key}") as e:
        mnist_detection(root=str(fake_root), **{**SMALL, **options})
    assert "\n" not in str(e.value)


def test_load_data_carries_targets_through_splits_and_normalises_only_images(fake_root):
    splits = load_data("mnist-detection", options={**SMALL, "root": str(fake_root)})
    assert splits.task == "detection" and len(splits.val) == 20 and len(splits.test) == 20
    assert splits.describe()["targets"] == {"boxes": [4, 4], "classes": [4]}
    assert splits.train.x.dtype == np.float32 and abs(float(splits.train.x.mean())) < 1e-3
    sub = splits.train.subset(np.array([5, 2]))
    assert np.array_equal(sub.targets["boxes"], splits.train.targets["boxes"][[5, 2]])
    with pytest.raises(EdgekdError, match="exclude_classes"):
        load_data("mnist-detection", exclude_classes=[3], options={**SMALL, "root": str(fake_root)})


@pytest.mark.skipif(not (Path(os.environ.get("EDGEKD_DATA_DIR", "/nonexistent")) / "mnist").is_dir(),
                    reason="needs EDGEKD_DATA_DIR with mnist/")  # fmt: skip
def test_generated_from_real_mnist_has_tight_digit_boxes():
    raw = mnist_detection(**SMALL)
    boxes, classes = raw.targets_train["boxes"], raw.targets_train["classes"]
    sides = boxes[classes >= 0][:, 2:] - boxes[classes >= 0][:, :2]
    assert sides.min() >= 2 and sides.max() <= 24  # digits at 12..24 pixels, ink smaller than the square
    assert (
        set(np.unique(classes[classes >= 0])) <= set(range(10)) and len(np.unique(classes[classes >= 0])) > 5
    )


# --- detection npz ---------------------------------------------------------------------------------
def _npz(tmp_path, **over) -> str:
    images = np.zeros((6, 16, 16), np.uint8)
    boxes = np.zeros((6, 2, 4), np.float32)
    classes = np.full((6, 2), -1)
    for i in range(6):
        images[i, 2:6, 3:9] = 255
        boxes[i, 0], classes[i, 0] = (3, 2, 9, 6), i % 2
    arrays = {"images": images, "boxes": boxes, "classes": classes, **over}
    np.savez(tmp_path / "d.npz", **{k: v for k, v in arrays.items() if v is not None})
    return str(tmp_path / "d.npz")


def test_detection_npz_reads_images_boxes_and_classes(tmp_path):
    raw = detection_npz(_npz(tmp_path))
    assert raw.task == "detection" and raw.x_train.shape == (6, 1, 16, 16) and raw.scale == 255.0
    assert raw.class_names == ["0", "1"] and raw.y_train.tolist() == [1] * 6 and raw.x_test is None
    assert raw.targets_train["boxes"][0, 0].tolist() == [3, 2, 9, 6]
    splits = load_data(
        "detection-npz", options={"path": _npz(tmp_path)}, test_fraction=0.34, val_fraction=0.25
    )
    for part in (splits.train, splits.val, splits.test):  # held-out rows keep their own boxes
        assert len(part) and (part.targets["boxes"][:, 0] == [3, 2, 9, 6]).all()


BAD_NPZ = [
    ({"boxes": None}, "missing array 'boxes'"),
    ({"images": np.zeros((6, 16), np.uint8)}, "array 'images' has shape"),
    ({"boxes": np.zeros((6, 2, 3))}, "array 'boxes' has shape"),
    ({"classes": np.zeros((6, 3))}, "array 'classes' has shape"),
    ({"classes": np.full((6, 2), -2)}, "array 'classes' holds -2"),
    ({"classes": np.full((6, 2), 0.5)}, "array 'classes' holds non-integer"),
    ({"boxes": np.tile(np.array([3, 2, 20, 6], np.float32), (6, 2, 1)), "classes": np.zeros((6, 2))},
     "array 'boxes' image 0 box 0 is"),
    ({"boxes": np.tile(np.array([5, 2, 5, 6], np.float32), (6, 2, 1)), "classes": np.zeros((6, 2))},
     "need 0 <= x0 < x1 <= 16"),
    ({"boxes": np.full((6, 2, 4), np.nan), "classes": np.zeros((6, 2))}, "NaN or infinite"),
    ({"boxes": np.zeros((6, 101, 4)), "classes": np.full((6, 101), -1)}, "at most 100"),
    ({"images_test": np.zeros((2, 16, 16), np.uint8)}, "missing array 'boxes_test'"),
]  # fmt: skip


@pytest.mark.parametrize("over, message", BAD_NPZ, ids=[m for _, m in BAD_NPZ])
def test_detection_npz_refuses_bad_annotations_in_one_line_naming_the_file(tmp_path, over, message):
    path = _npz(tmp_path, **over)
    with pytest.raises(EdgekdError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        detection_npz(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(path)


def test_detection_npz_refuses_classes_beyond_the_names(tmp_path):
    with pytest.raises(EdgekdError, match="holds class 1 but there are 1 classes"):
        detection_npz(_npz(tmp_path), class_names=["only"])


def test_a_few_shot_sample_keeps_each_images_boxes(fake_root):
    from edgekd.data.fewshot import apply_few_shot
    from edgekd.recipe import FewShotConfig

    splits = load_data("mnist-detection", options={**SMALL, "root": str(fake_root)})
    few = apply_few_shot(splits, FewShotConfig(size=6, seed=0))
    idx = np.array(few.info["few_shot"]["indices"])
    assert len(few.train) == 6 and np.array_equal(few.train.x, splits.train.x[idx])
    for key in ("boxes", "classes"):
        assert np.array_equal(few.train.targets[key], splits.train.targets[key][idx])
