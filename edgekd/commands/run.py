"""``edgekd run RECIPE``: the whole pipeline in one command."""

from __future__ import annotations

import click


@click.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable)."
)
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders are created.")
@click.option("--skip-export", is_flag=True, help="Stop after training.")
@click.option("--skip-profile", is_flag=True, help="Do not profile.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def command(
    recipe: str, overrides: tuple[str, ...], runs_dir: str, skip_export: bool, skip_profile: bool, quiet: bool
) -> None:
    """Teacher -> distill -> export for the recipe's targets -> profile, into RUNS_DIR/<name>/."""
    from edgekd.pipeline import print_summary, run_pipeline
    from edgekd.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))
    summary = run_pipeline(
        r, runs_dir, skip_export=skip_export, skip_profile=skip_profile, progress=not quiet
    )
    print_summary(summary)
