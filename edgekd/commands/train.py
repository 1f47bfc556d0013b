"""``edgekd train RECIPE``: train a teacher or a baseline student on labels."""

from __future__ import annotations

import click

from edgekd.commands._common import recipe_options, run_and_report


@click.command("train")
@recipe_options
def command(
    recipe: str, overrides: tuple[str, ...], runs_dir: str, resume: bool, overwrite: bool, quiet: bool
) -> None:
    """Train a model on hard labels (a teacher, or a student baseline) into RUNS_DIR/<name>/model.pt."""
    run_and_report(recipe, overrides, runs_dir, resume, quiet, distill=False, overwrite=overwrite)
