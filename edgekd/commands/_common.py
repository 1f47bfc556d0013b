"""Options and output shared by the training commands."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

RECIPE_HELP = "Override a recipe key, e.g. --set train.lr=0.01 (repeatable)."


def recipe_options(f: Callable) -> Callable:
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(f)
    f = click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")(
        f
    )
    f = click.option("--runs-dir", default="runs", show_default=True, help="Where run folders are created.")(
        f
    )
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=RECIPE_HELP)(f)
    f = click.argument("recipe", type=click.Path(dir_okay=False))(f)
    return f


def run_and_report(
    recipe_path: str, overrides: tuple[str, ...], runs_dir: str, resume: bool, quiet: bool, *, distill: bool
) -> None:
    from edgekd.distill.runner import run_training
    from edgekd.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides))
    run = run_training(recipe, runs_dir, distill=distill, resume=resume, progress=not quiet)
    metrics = json.loads(run.metrics.read_text())
    final = metrics.get("final", {})
    acc = final.get("test_accuracy")
    click.echo(f"run folder: {run.root}")
    if acc is not None:
        click.echo(f"test accuracy: {acc:.4f} ({final.get('test_errors')} errors)")
