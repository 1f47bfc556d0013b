"""The data a recipe trains on: its data set, seeded splits and few-shot subset, loaded once per run."""

from __future__ import annotations

from edgekd.data.fewshot import apply_few_shot
from edgekd.data.registry import DataSplits, load_data
from edgekd.recipe import Recipe


def prepare_data(recipe: Recipe) -> DataSplits:
    """Load the recipe's data set with its seeded splits (and few-shot subset when asked)."""
    d = recipe.data
    splits = load_data(
        d.name, seed=recipe.seed if d.split_seed is None else d.split_seed, val_fraction=d.val_fraction,
        test_fraction=d.test_fraction, train_fraction=d.train_fraction, exclude_classes=d.exclude_classes, options=d.options,
    )  # fmt: skip
    return splits if d.few_shot is None else apply_few_shot(splits, d.few_shot)
