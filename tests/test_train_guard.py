"""edgekd.distill.train.guard: a NaN/inf loss stops the run, the last good checkpoint kept."""

import pytest
from _train import digits_recipe as _recipe

from edgekd.distill.runner import run_training
from edgekd.errors import EdgekdError


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    r = _recipe(train={"epochs": 3, "batch_size": 64, "lr": 1e6, "momentum": 0.9})
    with pytest.raises(EdgekdError, match=r"(became (nan|inf)|exploded).*no good epoch yet"):
        run_training(r, tmp_path, distill=False, progress=False)
    assert not (tmp_path / "r" / "model.pt").exists()
