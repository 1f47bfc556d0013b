"""edgekd.distill.train.device: the device (auto by default, cuda refused without a GPU), AMP on the CPU."""

import pytest
import torch
import yaml
from _train import cnn_recipe

from edgekd.distill.train.device import Amp
from edgekd.recipe import TrainConfig


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, run_cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(cnn_recipe(train={"epochs": 1, "device": "cuda"})))
    code, err = run_cli(["train", str(p), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert code == 2 and "train.device=cuda: no CUDA GPU" in err


def test_train_config_device_default_is_auto():
    assert TrainConfig().device == "auto"


def test_amp_is_a_no_op_on_the_cpu():
    amp = Amp("bf16", torch.device("cpu"))
    assert not amp.enabled and amp.scaler is None
    with amp.autocast():
        assert torch.ones(1).dtype == torch.float32
