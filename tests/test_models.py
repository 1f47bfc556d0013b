"""edgekd.models: the model registry, presets and checkpoints."""

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model, save_model


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_hinton_presets_have_the_paper_shapes():
    t = build_model("hinton-teacher")
    s = build_model("hinton-student")
    assert n_params(t) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    assert n_params(s) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    drops = [m.p for m in t.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.2, 0.5, 0.5]


def test_cnn_width_multiplier_and_ops():
    small = build_model("cnn", input_shape=(1, 28, 28), num_classes=10, width=0.5)
    big = build_model("cnn", input_shape=(1, 28, 28), num_classes=10, width=1.0)
    assert n_params(small) < n_params(big)
    allowed = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.AdaptiveAvgPool2d, torch.nn.Linear,
               torch.nn.Flatten, torch.nn.Identity, torch.nn.Dropout, torch.nn.Sequential)  # fmt: skip
    assert all(isinstance(m, allowed) for m in big.modules() if m is not big)
    assert big(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_save_load_roundtrip_rebuilds_by_name(tmp_path):
    m = build_model("cnn", input_shape=(1, 8, 8), num_classes=4, channels=[8, 16], width=1.0)
    save_model(
        tmp_path / "m.pt",
        m,
        "cnn",
        {"input_shape": (1, 8, 8), "num_classes": 4, "channels": (8, 16), "width": 1.0},
    )
    m2, rec = load_model(tmp_path / "m.pt")
    x = torch.randn(3, 1, 8, 8)
    m.eval()
    assert torch.allclose(m(x), m2(x)) and rec["kwargs"]["channels"] == [8, 16]


def test_user_model_by_module_path():
    m = build_model("torch.nn:Linear", in_features=3, out_features=2)
    assert isinstance(m, torch.nn.Linear)
    with pytest.raises(EdgekdError, match="cannot import"):
        build_model("no_such_module:Net")


def test_unknown_kwarg_lists_valid_ones():
    with pytest.raises(
        EdgekdError, match="unknown argument\\(s\\) widht; valid: input_shape, num_classes, channels, width"
    ):
        build_model("cnn", widht=2)


def test_wrong_file_type(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(EdgekdError, match="not an edgekd model file"):
        load_model(tmp_path / "x.pt")
