"""edgekd.distill.features: taps by module path (forward hooks), as feature-based losses use them."""

import pytest
import torch

from edgekd.distill.features import tap_features
from edgekd.errors import EdgekdError
from edgekd.models import build_model


def test_taps_return_the_named_modules_outputs_and_are_removed():
    m = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, channels=[8, 16])
    m.eval()
    x = torch.randn(2, 1, 8, 8)
    with tap_features(m, ["features.0", "pool"]) as feats:
        out = m(x)
    assert feats["features.0"].shape == (2, 8, 8, 8)
    assert feats["pool"].shape == (2, 16, 1, 1)
    assert torch.allclose(m.classifier(feats["pool"].flatten(1)), out)
    # hooks are gone after the block: forward no longer records anything
    feats.clear()
    m(x)
    assert feats == {}
    assert all(not mod._forward_hooks for mod in m.modules())


def test_unknown_path_lists_valid_paths():
    m = build_model("mlp", input_shape=(1, 4, 4), num_classes=3, hidden=[5])
    with (
        pytest.raises(
            EdgekdError, match="no module 'features.9' in MLP; valid paths include: features, features.0"
        ),
        tap_features(m, ["features.9"]),
    ):
        pass
