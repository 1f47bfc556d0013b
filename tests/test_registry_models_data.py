"""Generic checks run over every registered model, data set, augmentation and deployment target (as timm's
tests run over ``list_models()``): registering a new one makes these tests run on it, and a name without
an example below fails ``test_every_*_has_an_example`` until its author adds one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.data import load_data
from edgekd.data.augment import TRANSFORMS, Augmentation, parse_augment
from edgekd.data.registry import DATASETS
from edgekd.models import build_model, load_model, save_model
from edgekd.models.registry import MODELS
from edgekd.targets import fit_check, list_targets

TINY_CNN = {"name": "cnn", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 3, "channels": [4, 8]}}

# name -> (kwargs, input shape without the batch, output shape without the batch)
MODEL_EXAMPLES: dict[str, tuple[dict, tuple[int, ...], tuple[int, ...]]] = {
    "mlp": ({"input_shape": (1, 8, 8), "num_classes": 3, "hidden": (16,)}, (1, 8, 8), (3,)),
    "hinton-teacher": ({"input_shape": (1, 8, 8), "num_classes": 3}, (1, 8, 8), (3,)),
    "hinton-student": ({"input_shape": (1, 8, 8), "num_classes": 3}, (1, 8, 8), (3,)),
    "cnn": (TINY_CNN["kwargs"], (1, 8, 8), (3,)),
    "centernet": (
        {"input_shape": (1, 16, 16), "num_classes": 3, "channels": [4, 8, 8], "head_channels": 8},
        (1, 16, 16),
        (7, 4, 4),
    ),
    "centernet-teacher": (
        {"input_shape": (1, 16, 16), "num_classes": 3, "head": "edges", "bins": 4},
        (1, 16, 16),
        (19, 4, 4),
    ),
    "fomo": ({"input_shape": (1, 16, 16), "num_classes": 3, "channels": [4, 8, 8]}, (1, 16, 16), (4, 2, 2)),
    "fomo-teacher": ({"input_shape": (1, 16, 16), "num_classes": 3}, (1, 16, 16), (4, 2, 2)),
    "cnn-teacher": ({"input_shape": (1, 8, 8), "num_classes": 3}, (1, 8, 8), (3,)),
    "cnn-early-exit": (
        {"input_shape": (1, 8, 8), "num_classes": 3, "channels": [4, 8], "exit": 1, "head_channels": 8},
        (1, 8, 8),
        (3,),
    ),  # fmt: skip
    "vgg": ({"input_shape": (1, 8, 8), "num_classes": 3, "stages": [[4], [8]]}, (1, 8, 8), (3,)),
    "mbv2-tiny": (
        {"input_shape": (1, 8, 8), "num_classes": 3, "stem_channels": 4, "last_channels": 8},
        (1, 8, 8),
        (3,),
    ),  # fmt: skip
    "lstm-ae": ({"input_shape": (6, 3), "hidden": 4, "latent": 2}, (6, 3), (6, 3)),
    "fc-ae": ({"input_shape": (6, 3)}, (6, 3), (6, 3)),
    "conv1d-ae": ({"input_shape": (8, 3)}, (8, 3), (8, 3)),
    "ensemble": ({"members": [TINY_CNN, TINY_CNN], "weights": [1, 3]}, (1, 8, 8), (3,)),
    "specialist-ensemble": (
        {
            "generalist": TINY_CNN,
            "subsets": [[0, 1]],
            "specialists": [{"name": "cnn", "kwargs": {**TINY_CNN["kwargs"], "num_classes": 3}}],
        },
        (1, 8, 8),
        (3,),
    ),  # fmt: skip
}


def test_every_model_has_an_example():
    assert sorted(MODEL_EXAMPLES) == MODELS.names()


@pytest.mark.parametrize("name", MODELS.names())
def test_model_builds_runs_and_rebuilds_from_its_file(name, tmp_path):
    kwargs, in_shape, out_shape = MODEL_EXAMPLES[name]
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    x = torch.randn(5, *in_shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (5, *out_shape) and torch.isfinite(y).all()
    with torch.no_grad():  # eval mode is deterministic and per-example (no batch coupling)
        assert torch.allclose(model(x), y) and torch.allclose(model(x[:2]), y[:2], atol=1e-5)
    save_model(tmp_path / "m.pt", model, name, kwargs)
    again, record = load_model(tmp_path / "m.pt")
    assert record["name"] == name
    with torch.no_grad():
        assert torch.allclose(again(x), y, atol=1e-6)


# combiners whose forward pass itself optimises (its members are trained alone, then combined)
NOT_TRAINED_END_TO_END = {"specialist-ensemble"}


@pytest.mark.parametrize("name", sorted(set(MODELS.names()) - NOT_TRAINED_END_TO_END))
def test_model_trains_every_parameter(name):
    """One backward pass reaches every trainable parameter (none is dead weight)."""
    kwargs, in_shape, _ = MODEL_EXAMPLES[name]
    torch.manual_seed(0)
    model = build_model(name, **kwargs).train()
    out = model(torch.randn(4, *in_shape))
    out.float().pow(2).mean().backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing, f"{name}: no gradient reaches {missing}"


def _npz_options(tmp_path) -> dict:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (60, 1, 6, 6), dtype=np.uint8),
             y=np.arange(60) % 3)  # fmt: skip
    return {"path": str(tmp_path / "d.npz"), "scale": 255.0}


def _image_folder_options(tmp_path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 255, (7, 9), dtype=np.uint8)).save(
                tmp_path / "img" / c / f"{i}.png"
            )
    return {"path": str(tmp_path / "img"), "size": [6, 6]}


def _detection_npz_options(tmp_path) -> dict:
    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([1, 1, 5, 4], np.float32), (60, 2, 1))
    classes = np.stack([np.arange(60) % 3, np.full(60, -1)], axis=1)
    np.savez(tmp_path / "det.npz", images=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), boxes=boxes,
             classes=classes)  # fmt: skip
    return {"path": str(tmp_path / "det.npz")}


GENERATED_DETECTION = {"canvas": 32, "train_images": 40, "val_images": 10, "test_images": 10}

# name -> the loader's options, or a function of tmp_path making them; a plain dict means the data set
# is read from EDGEKD_DATA_DIR (../shared/datasets in CI)
DATA_EXAMPLES = {
    "digits": {},
    "detection-npz": _detection_npz_options,
    "mnist-detection": GENERATED_DETECTION,
    "fashion-mnist-detection": GENERATED_DETECTION,
    "npz": _npz_options,
    "image-folder": _image_folder_options,
    "mnist": {},
    "fashion-mnist": {},
    "smd": {"machines": "machine-1-6", "length": 16, "stride": 8, "test_stride": 8},
}


def test_every_data_set_has_an_example():
    assert sorted(DATA_EXAMPLES) == DATASETS.names()


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS.names())
def test_data_set_splits_are_disjoint_normalised_and_reproducible(name, tmp_path, data_dir):
    example = DATA_EXAMPLES[name]
    if isinstance(example, dict) and name != "digits" and data_dir is None:
        pytest.skip(f"{name} needs EDGEKD_DATA_DIR")
    options = example if isinstance(example, dict) else example(tmp_path)
    first = load_data(name, seed=3, options=options)
    again = load_data(name, seed=3, options=options)
    for part in ("train", "val", "test"):
        a, b = getattr(first, part), getattr(again, part)
        assert len(a) > 0 and a.x.dtype == np.float32 and np.isfinite(a.x).all()
        assert a.x.shape[1:] == tuple(first.input_shape) and len(a.x) == len(a.y)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    if not first.info.get("normalised") and first.task == "classification":  # stats of the training split
        assert abs(float(first.train.x.mean())) < 1e-3 and abs(float(first.train.x.std()) - 1) < 1e-2
        assert int(first.train.y.max()) < first.num_classes
    described = first.describe()
    assert described["name"] == name and described["sizes"]["train"] == len(first.train)


@pytest.fixture
def data_dir():
    import os
    from pathlib import Path

    d = os.environ.get("EDGEKD_DATA_DIR")
    return Path(d) if d and (Path(d) / "mnist").is_dir() else None


# name -> (data set the transform is valid for, input shape without the batch)
AUGMENT_EXAMPLES = {
    "translate": ("mnist", (1, 8, 8)),
    "crop": ("mnist", (1, 8, 8)),
    "hflip": ("fashion-mnist", (1, 8, 8)),
    "erase": ("mnist", (1, 8, 8)),
    "mixup": ("mnist", (1, 8, 8)),
    "cutmix": ("mnist", (1, 8, 8)),
    "noise": ("smd", (6, 3)),
    "scale": ("smd", (6, 3)),
    "time-shift": ("smd", (6, 3)),
}


def test_every_augmentation_has_an_example():
    assert sorted(AUGMENT_EXAMPLES) == sorted(TRANSFORMS)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_augmentation_is_a_pure_function_of_seed_view_and_example(name):
    dataset, shape = AUGMENT_EXAMPLES[name]
    task = "classification" if dataset != "smd" else "reconstruction"
    specs = parse_augment([{"name": name}], dataset, task)
    assert specs[0].params == {k: d for k, (_, d) in TRANSFORMS[name].params.items()}
    x = torch.randn(40, *shape)
    y = torch.arange(40) % 4
    index, view = np.arange(0, 40, 3), np.arange(14) % 5
    out, labels = Augmentation(specs, seed=7).apply(x, y, index, view, num_classes=4)
    again, _ = Augmentation(specs, seed=7).apply(x, y, index[::-1].copy(), view[::-1].copy(), num_classes=4)
    assert out.shape == x[index].shape and torch.isfinite(out).all() and len(labels) == len(index)
    assert torch.equal(again.flip(0), out)  # each example's view depends on nothing but (seed, view, index)
    changed = [
        not torch.equal(Augmentation(specs, seed=s).apply(x, y, index, view, 4)[0], out) for s in (8, 9, 10)
    ]
    assert any(changed), f"{name} with its default parameters never changes the input"


@pytest.mark.parametrize("target", list_targets(), ids=lambda t: t.name)
def test_target_fits_a_small_model_but_not_a_huge_one(target):
    """Microcontroller targets check flash and RAM; host targets (phones, boards running Linux) say why not."""
    small = fit_check(target, model_bytes=1024, arena_total=1024)
    huge = fit_check(target, model_bytes=1 << 40, arena_total=1 << 40)
    if small["rows"]:
        limited = [r["available"] is not None for r in small["rows"]]
        assert small["fits"] is True and huge["fits"] is (not any(limited))
        assert [r["ok"] for r in huge["rows"]] == [not lim for lim in limited]
    else:
        assert small["fits"] is None and "not checked" in small["note"]
