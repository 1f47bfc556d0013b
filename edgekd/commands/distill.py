"""``edgekd distill RECIPE``: train a student from a teacher."""

from __future__ import annotations

import click

from edgekd.commands._common import recipe_options, run_and_report


@click.command("distill")
@recipe_options
def command(
    recipe: str, overrides: tuple[str, ...], runs_dir: str, resume: bool, overwrite: bool, quiet: bool
) -> None:
    """Distil a student from `teacher.path` with the recipe's method into RUNS_DIR/<name>/student.pt."""
    run_and_report(recipe, overrides, runs_dir, resume, quiet, distill=True, overwrite=overwrite)
