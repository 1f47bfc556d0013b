"""Recipes shared by the training-loop tests: a small MLP on the bundled digits."""

from edgekd.recipe import Recipe, recipe_from_dict


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
