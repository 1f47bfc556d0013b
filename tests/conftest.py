"""Shared test setup: data directory, one thread, the in-process CLI and a trained CNN teacher."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("EDGEKD_DATA_DIR", str(REPO.parent / "shared" / "datasets"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault(
    "EDGEKD_THREADS", "1"
)  # tests train tiny models: one thread is fastest and deterministic
torch.set_num_threads(1)


def real_data_dir() -> Path:
    return Path(os.environ["EDGEKD_DATA_DIR"])


@pytest.fixture
def mnist_available() -> bool:
    if not (real_data_dir() / "mnist").exists():
        pytest.skip("MNIST not in EDGEKD_DATA_DIR")
    return True


@pytest.fixture
def run_cli(capsys):
    """Run the ``edgekd`` command line in-process: ``code, stderr = run_cli(["train", ...])``."""
    from edgekd.cli import main

    def run(args: list[str]) -> tuple[int, str]:
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        return code, capsys.readouterr().err.strip()

    return run


@pytest.fixture(scope="session")
def cnn_teacher(tmp_path_factory) -> Path:
    """The run folder of a CNN teacher (``CNN_TEACHER``, 6 epochs on digits), trained once per session."""
    from _train import CNN_TEACHER, cnn_recipe

    from edgekd.distill.runner import run_training
    from edgekd.recipe import recipe_from_dict

    runs = tmp_path_factory.mktemp("runs")
    train = {"epochs": 6, "batch_size": 32, "lr": 0.01, "optimizer": "adam"}
    r = recipe_from_dict(cnn_recipe(name="teacher", model=CNN_TEACHER, train=train))
    return run_training(r, runs, distill=False, progress=False).root
