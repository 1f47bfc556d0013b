"""Recipes and helpers shared by the training tests: a small MLP and a two-block CNN on the bundled digits."""

from pathlib import Path

import pytest

from edgekd.distill.runner import run_training
from edgekd.distill.train import TrainingInterrupted
from edgekd.recipe import Recipe, recipe_from_dict
from edgekd.runfolder import RunFolder

CNN_TEACHER = {"name": "cnn", "kwargs": {"channels": [8, 16], "depthwise": False}}
CNN_STUDENT = {"name": "cnn", "kwargs": {"channels": [4, 8], "depthwise": False}}


def digits_recipe(**over) -> Recipe:
    """A 4-epoch MLP recipe on ``digits``; each keyword replaces one top-level section."""
    base = {
        "name": "r",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"hidden": [64], "dropout_hidden": 0.1}},
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.05},
    }
    for k, v in over.items():
        base[k] = v
    return recipe_from_dict(base)


def cnn_recipe(**over) -> dict:
    """A 2-epoch Adam recipe (a dict) for the small CNN student on ``digits``; each keyword replaces one
    top-level section."""
    base = {"name": "r", "data": {"name": "digits"}, "model": CNN_STUDENT,
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "optimizer": "adam"}}  # fmt: skip
    base.update(over)
    return base


def interrupt_and_resume(
    recipe: Recipe, runs: Path, *, distill: bool, stop_after_epoch: int = 1
) -> RunFolder:
    """Train ``recipe`` until it is interrupted after ``stop_after_epoch``, then resume it to the end."""
    with pytest.raises(TrainingInterrupted):
        run_training(recipe, runs, distill=distill, progress=False, stop_after_epoch=stop_after_epoch)
    return run_training(recipe, runs, distill=distill, progress=False, resume=True)
