"""``edgekd distill RECIPE``: train a student from a teacher (``--nproc N``: N processes with torchrun)."""

from __future__ import annotations

import click

from edgekd.commands._common import recipe_options, run_and_report


@click.command("distill")
@recipe_options
@click.option(
    "--nproc",
    type=int,
    default=0,
    help="Train with N processes on this machine (torchrun --standalone --nproc_per_node N; DDP, "
    "gloo on CPU, NCCL on GPUs). For several machines run torchrun yourself (see docs/recipes.md).",
)
def command(
    recipe: str,
    overrides: tuple[str, ...],
    runs_dir: str,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    nproc: int,
) -> None:
    """Distil a student from `teacher.path` with the recipe's method into RUNS_DIR/<name>/student.pt."""
    if nproc:
        from edgekd.distill.distributed import env_world, launch

        if env_world()[1] > 1:
            from edgekd.errors import EdgekdError

            raise EdgekdError(
                "--nproc inside torchrun: drop --nproc (torchrun already started the processes)"
            )
        args = ["distill", recipe, "--runs-dir", runs_dir, *(f"--set={o}" for o in overrides)]
        args += [
            flag for flag, on in (("--resume", resume), ("--overwrite", overwrite), ("--quiet", quiet)) if on
        ]
        from edgekd.codetrust import trusts_all

        if trusts_all():  # --trust-model-code was given: the processes need it too
            args.append("--trust-model-code")
        rc = launch(nproc, args)
        if rc:
            raise SystemExit(rc)
        return
    run_and_report(recipe, overrides, runs_dir, resume, quiet, distill=True, overwrite=overwrite)
