"""edgekd.models.autoencoders (LSTM, FC, Conv1d): shapes, MCU-friendly ops, registry, they learn."""

import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models import build_model


@pytest.mark.parametrize("name, kwargs", [
    ("lstm-ae", {"hidden": 32, "latent": 16}),
    ("lstm-ae", {"hidden": 8, "latent": 4, "layers": 2}),
    ("fc-ae", {"hidden": [32], "latent": 8}),
    ("conv1d-ae", {"channels": [8, 4], "latent": 8}),
])  # fmt: skip
@pytest.mark.parametrize("shape", [(32, 38), (15, 3)])
def test_shapes(name, kwargs, shape):
    m = build_model(name, input_shape=list(shape), num_classes=2, **kwargs)
    x = torch.randn(4, *shape)
    assert m(x).shape == (4, *shape)


def test_parameter_counts():
    fc = build_model("fc-ae", input_shape=[32, 38], hidden=[64], latent=16)
    w = 32 * 38
    assert sum(p.numel() for p in fc.parameters()) == (w * 64 + 64) + (64 * 16 + 16) + (16 * 64 + 64) + (
        64 * w + w
    )
    t = build_model("lstm-ae", input_shape=[32, 38], hidden=64, latent=32)
    s = build_model("lstm-ae", input_shape=[32, 38], hidden=16, latent=8)
    lstm = lambda i, h: 4 * h * (i + h) + 8 * h  # noqa: E731  (PyTorch keeps two bias vectors)
    assert sum(p.numel() for p in s.parameters()) == lstm(38, 16) + (16 * 8 + 8) + lstm(8, 16) + (
        16 * 38 + 38
    )
    assert sum(p.numel() for p in t.parameters()) > 9 * sum(p.numel() for p in s.parameters())


@pytest.mark.parametrize("name", ["fc-ae", "conv1d-ae"])
def test_mcu_students_use_only_linear_conv1d_relu(name):
    m = build_model(name, input_shape=[32, 38])
    leaf = {type(x) for x in m.modules() if not list(x.children())}
    assert leaf <= {nn.Linear, nn.Conv1d, nn.ReLU}, leaf


def test_bad_shapes_and_kwargs():
    with pytest.raises(EdgekdError, match=r"input_shape=\[1, 28, 28\]; expected \[length, features\]"):
        build_model("fc-ae", input_shape=[1, 28, 28])
    with pytest.raises(EdgekdError, match="kernel=4 must be odd"):
        build_model("conv1d-ae", input_shape=[32, 38], kernel=4)
    with pytest.raises(EdgekdError, match="unknown argument"):
        build_model("lstm-ae", input_shape=[32, 38], width=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm-ae", "fc-ae", "conv1d-ae"])
def test_learns_to_reconstruct_sines(name):
    torch.manual_seed(0)
    t = torch.arange(16).float()
    phase = torch.rand(256, 1, 1) * 6.28
    freq = torch.tensor([0.3, 0.5]).view(1, 1, 2)
    x = torch.sin(t.view(1, 16, 1) * freq + phase)  # (256, 16, 2)
    kw = {"lstm-ae": {"hidden": 16, "latent": 4}, "fc-ae": {"hidden": [32], "latent": 4},
          "conv1d-ae": {"channels": [8], "latent": 4}}[name]  # fmt: skip
    m = build_model(name, input_shape=[16, 2], **kw)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = nn.functional.mse_loss(m(x), x).item()
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.mse_loss(m(x), x)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first, (first, loss.item())


def test_unrolled_lstm_equals_nn_lstm():
    torch.manual_seed(0)
    ref = build_model("lstm-ae", input_shape=[12, 5], hidden=8, latent=3, layers=2)
    unrolled = build_model("lstm-ae", input_shape=[12, 5], hidden=8, latent=3, layers=2, unrolled=True)
    assert sorted(ref.state_dict()) == sorted(unrolled.state_dict())
    unrolled.load_state_dict(ref.state_dict())
    x = torch.randn(3, 12, 5)
    torch.testing.assert_close(unrolled(x), ref(x), atol=1e-6, rtol=1e-5)
    assert not any(isinstance(m, nn.LSTM) for m in unrolled.modules())
