"""Options and output shared by the commands."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from edgekd.errors import set_interrupt_message

RECIPE_HELP = "Override a recipe key, e.g. --set train.lr=0.01 (repeatable)."
TRUST_HELP = (
    "Allow a model file or recipe to name a user model (package.module:Class) and import that code. Only "
    "for files you made and trust; without it a file may only name registered edgekd models (a name you "
    "type, --set model.name=pkg.mod:Cls, is always allowed)."
)


def trust_option(f: Callable) -> Callable:
    """``--trust-model-code``: the wrapped command may build ``module:Class`` models named in files."""

    @functools.wraps(f)
    def wrapper(*args: Any, trust_model_code: bool = False, **kwargs: Any) -> Any:
        if not trust_model_code:
            return f(*args, **kwargs)
        from edgekd.codetrust import trust_model_code as trusting

        with trusting(True):
            return f(*args, **kwargs)

    return click.option("--trust-model-code", is_flag=True, help=TRUST_HELP)(wrapper)


def wire_options(f: Callable) -> Callable:
    """``--mlperf-model``, ``--input-format``, ``--results``: what the device firmware and the bench host
    agree on (:class:`edgekd.harness.mlperf.WireSettings`; each defaults to the model's task)."""
    from edgekd.harness.protocol import INPUT_FORMATS, MODEL_NAMES, RESULT_FORMATS

    f = click.option("--results", type=click.Choice(RESULT_FORMATS),
                     help="Results the device prints: dequantized floats (the reference), softmax of them, or "
                     "raw int8 (default: float; softmax for a classifier without a final softmax).")(f)  # fmt: skip
    f = click.option("--input-format", type=click.Choice(INPUT_FORMATS),
                     help="How samples are sent (default: the task's: uint8 pixels for ic01/vww01, int8 for "
                     "kws01, float32 for ad01).")(f)  # fmt: skip
    return click.option("--mlperf-model", type=click.Choice(MODEL_NAMES),
                        help="The MLPerf Tiny model name the device reports (default: from the model's input "
                        "shape).")(f)  # fmt: skip


def recipe_options(f: Callable) -> Callable:
    f = trust_option(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(f)
    f = click.option(
        "--overwrite",
        is_flag=True,
        help="Move an existing run folder aside (<name>.old-<time>) and start again.",
    )(f)
    f = click.option(
        "--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint (same recipe)."
    )(f)
    f = click.option("--runs-dir", default="runs", show_default=True, help="Where run folders are created.")(
        f
    )
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=RECIPE_HELP)(f)
    f = click.argument("recipe", type=click.Path(dir_okay=False))(f)
    return f


def run_and_report(
    recipe_path: str,
    overrides: tuple[str, ...],
    runs_dir: str,
    resume: bool,
    quiet: bool,
    *,
    distill: bool,
    overwrite: bool = False,
) -> None:
    from edgekd.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides))  # before torch: a bad recipe fails fast
    from edgekd.distill.runner import run_training

    set_interrupt_message(
        f"the last completed epoch is checkpointed in {runs_dir}/{recipe.name}/; continue with --resume"
    )
    run = run_training(
        recipe, runs_dir, distill=distill, resume=resume, overwrite=overwrite, progress=not quiet
    )
    from edgekd.distill import distributed

    ctx = distributed.current()
    if ctx.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
        if not ctx.is_main:
            return  # rank 0 reports
    metrics = json.loads(run.metrics.read_text())
    final = metrics.get("final", {})
    acc = final.get("test_accuracy")
    click.echo(f"run folder: {run.root}")
    if acc is not None:
        click.echo(f"test accuracy: {acc:.4f} ({final.get('test_errors')} errors)")


@contextlib.contextmanager
def run_folder_locked(source: str | Path) -> Iterator[None]:
    """A run-folder SOURCE of export / bench under :meth:`RunFolder.lock_if_used`; a file needs no lock."""
    if not Path(source).is_dir():
        yield
        return
    from edgekd.runfolder import RunFolder

    with RunFolder(source).lock_if_used():
        yield
