"""``edgekd run RECIPE``: the whole pipeline in one command."""

from __future__ import annotations

import click

from edgekd.commands._common import trust_option
from edgekd.errors import set_interrupt_message


@click.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable)."
)
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders are created.")
@click.option(
    "--resume", is_flag=True, help="Continue a previous run: reuse finished stages, resume the rest."
)
@click.option("--overwrite", is_flag=True, help="Move an existing run folder aside and start again.")
@click.option("--skip-export", is_flag=True, help="Stop after training.")
@click.option("--skip-profile", is_flag=True, help="Do not profile.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@trust_option
def command(
    recipe: str,
    overrides: tuple[str, ...],
    runs_dir: str,
    resume: bool,
    overwrite: bool,
    skip_export: bool,
    skip_profile: bool,
    quiet: bool,
) -> None:
    """Teacher -> distill -> export for the recipe's targets -> profile, into RUNS_DIR/<name>/."""
    from edgekd.recipe import load_recipe

    r = load_recipe(recipe, list(overrides))  # before torch: a bad recipe fails fast
    from edgekd.pipeline import print_summary, run_pipeline

    set_interrupt_message(
        f"finished stages and the last completed epoch are kept in {runs_dir}/{r.name}/; continue with --resume"
    )
    summary = run_pipeline(
        r, runs_dir, skip_export=skip_export, skip_profile=skip_profile, progress=not quiet, resume=resume,
        overwrite=overwrite,
    )  # fmt: skip
    print_summary(summary)
