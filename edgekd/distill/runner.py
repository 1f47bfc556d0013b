"""What ``edgekd train`` and ``edgekd distill`` do: recipe -> data, models, method -> trained run folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgekd.data import DataSplits, load_data
from edgekd.distill.bias import tune_class_bias
from edgekd.distill.engine import Trainer, TrainingDiverged, plot_curves, seed_everything, write_metrics
from edgekd.distill.methods import build_method
from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model, save_model
from edgekd.recipe import Recipe, dump_recipe
from edgekd.runfolder import RunFolder

log = logging.getLogger(__name__)


def prepare_data(recipe: Recipe) -> DataSplits:
    """Load the recipe's data set with its seeded splits (and few-shot subset when asked)."""
    d = recipe.data
    splits = load_data(
        d.name, seed=recipe.seed, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
        train_fraction=d.train_fraction, exclude_classes=d.exclude_classes, options=d.options,
    )  # fmt: skip
    if d.few_shot is not None:
        from edgekd.data.fewshot import apply_few_shot

        splits = apply_few_shot(splits, d.few_shot)
    return splits


def resolve_teacher_path(path: str | Path, runs_dir: str | Path | None = None) -> Path:
    """A teacher is a run folder (its trained model) or a checkpoint file.

    A relative path is looked up in the runs folder the user gave first: ``runs/hinton-teacher`` with
    ``--runs-dir /data/runs`` means ``/data/runs/hinton-teacher``; a bare name (``hinton-teacher``) is a
    run in ``--runs-dir``; otherwise the path is taken relative to the current folder.
    """
    p = Path(path)
    candidates: list[Path] = []
    if runs_dir is not None and not p.is_absolute():
        rd = Path(runs_dir)
        if p.parts and p.parts[0] == "runs" and len(p.parts) > 1:
            candidates.append(rd.joinpath(*p.parts[1:]))
        candidates.append(rd / p)
    candidates.append(p)
    for c in candidates:
        if c.is_dir():
            return RunFolder(c).trained_model()
        if c.exists():
            return c
    where = (
        f" (looked in {', '.join(str(c) for c in dict.fromkeys(candidates))})" if len(candidates) > 1 else ""
    )
    raise EdgekdError(
        f"teacher.path={str(p)!r}: no such run folder or checkpoint{where}; train a teacher first"
    )


def load_teacher(
    path: str | Path, splits: DataSplits, runs_dir: str | Path | None = None
) -> tuple[nn.Module, Path]:
    ckpt = resolve_teacher_path(path, runs_dir)
    teacher, record = load_model(ckpt)
    kw = record.get("kwargs", {})
    if "num_classes" in kw and int(kw["num_classes"]) != splits.num_classes:
        raise EdgekdError(
            f"{ckpt}: teacher predicts {kw['num_classes']} classes but data set {splits.name!r} has "
            f"{splits.num_classes}; use a teacher trained on the same classes"
        )
    if "input_shape" in kw and tuple(kw["input_shape"]) != tuple(splits.input_shape):
        raise EdgekdError(
            f"{ckpt}: teacher expects input {tuple(kw['input_shape'])} but data set {splits.name!r} gives "
            f"{tuple(splits.input_shape)}"
        )
    return teacher, ckpt


def model_kwargs(recipe_kwargs: dict[str, Any], splits: DataSplits) -> dict[str, Any]:
    kw = dict(recipe_kwargs)
    kw.setdefault("input_shape", list(splits.input_shape))
    kw.setdefault("num_classes", splits.num_classes)
    return kw


def run_training(
    recipe: Recipe,
    runs_dir: str | Path = "runs",
    *,
    distill: bool,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    run_dir: str | Path | None = None,
    splits: DataSplits | None = None,
    stop_after_epoch: int | None = None,
) -> RunFolder:
    """Train (labels only) or distill (from ``recipe.teacher``) into ``runs_dir/<name>``.

    Everything is validated in memory first (recipe, data, teacher, model, method, the run folder's state);
    only then is anything written, and every write is atomic. A folder that already holds a run is refused
    unless ``resume`` (same recipe, see :data:`edgekd.recipe.RESUME_MAY_CHANGE`) or ``overwrite`` (the old
    folder is moved aside first).
    """
    run = RunFolder(run_dir or Path(runs_dir) / recipe.name)
    state = run_state(run, recipe.train.epochs)
    if resume and state == "empty":
        raise EdgekdError(f"{run.root}: nothing to resume (no checkpoint.pt); run without --resume")
    if resume:
        check_resume_recipe(run, recipe)
    elif state != "empty" and not overwrite:
        what = "an interrupted run" if state == "interrupted" else "a finished run"
        raise EdgekdError(
            f"{run.root}: holds {what}; pass --resume to continue it, --overwrite to move it aside and start "
            "again, or choose another name (--set name=...)"
        )
    splits = splits or prepare_data(recipe)
    teacher, teacher_ckpt = None, None
    method = recipe.method
    if distill:
        if recipe.teacher is None or not recipe.teacher.path:
            raise EdgekdError(
                "recipe: key 'teacher.path' is required for distill (a run folder or checkpoint)"
            )
        if method.name == "supervised":
            raise EdgekdError(
                "recipe: key 'method.name' is 'supervised'; choose a distillation method, e.g. kd"
            )
        teacher, teacher_ckpt = load_teacher(recipe.teacher.path, splits, runs_dir)
    kwargs = model_kwargs(recipe.model.kwargs, splits)
    seed_everything(recipe.seed)  # model initialisation is part of the recorded seed
    student = build_model(recipe.model.name, **kwargs)
    distiller = build_method(method.name, student, teacher, method.params)

    # --- validated: from here on the run folder changes ------------------------------------------
    if overwrite and state != "empty" and not resume:
        moved = move_aside(run.root)
        log.info("moved the previous run to %s", moved)
    run.ensure()
    if teacher_ckpt is not None and not (run.teacher.exists() and run.teacher.samefile(teacher_ckpt)):
        atomic_write_bytes(run.teacher, Path(teacher_ckpt).read_bytes())
    atomic_write_text(run.recipe, dump_recipe(recipe))
    atomic_write_json(run.seeds, {"seed": recipe.seed, "data_split_seed": recipe.seed,
                                  "few_shot_seed": recipe.data.few_shot.seed if recipe.data.few_shot else None})  # fmt: skip
    atomic_write_json(run.data_info, splits.describe())

    label = f"{'distill' if distill else 'train'} {recipe.name}"
    trainer = Trainer(
        distiller,
        recipe.train,
        run,
        seed=recipe.seed,
        jitter=recipe.data.jitter,
        progress=progress,
        label=label,
    )
    out = run.student if distill else run.model
    try:
        result = trainer.fit(
            splits.train, splits.val, splits.test, resume=resume, stop_after_epoch=stop_after_epoch
        )
    except TrainingDiverged as e:
        if e.last_good_epoch is None:
            raise
        # the distiller now holds the last good epoch's weights: keep them usable (exportable)
        model = distiller.export_student()
        save_model(out, model, recipe.model.name, kwargs,
                   meta={"method": method.name, "seed": recipe.seed, "diverged": str(e),
                         "epoch": e.last_good_epoch})  # fmt: skip
        raise EdgekdError(
            f"{e}; {out.name} holds epoch {e.last_good_epoch}, the last good one, and can still be exported"
        ) from None
    final_model = distiller.export_student()
    extra: dict[str, Any] = {
        "method": method.name,
        "model": recipe.model.name,
        "params": sum(p.numel() for p in final_model.parameters()),
    }
    if recipe.eval.tune_bias_for_classes:
        extra["bias_correction"] = tune_class_bias(final_model, recipe.eval.tune_bias_for_classes, splits.val)
        from edgekd.distill.engine import evaluate

        result.final.update({f"test_{k}": v for k, v in evaluate(final_model, splits.test).items()})
    if recipe.data.exclude_classes:
        extra["test_errors_on_excluded"] = _errors_on_classes(
            final_model, splits, recipe.data.exclude_classes
        )
    save_model(
        out,
        final_model,
        recipe.model.name,
        kwargs,
        meta={"method": method.name, "seed": recipe.seed, **result.final},
    )
    write_metrics(run, result, extra)
    plot_curves(run, result.history, label)
    return run


# Files that make a folder a run: a new run never mixes with them.
RUN_ARTIFACTS = ("recipe.yaml", "checkpoint.pt", "model.pt", "student.pt", "metrics.json", "export",
                 "report.json", "report.html", "report.md")  # fmt: skip


def run_state(run: RunFolder, epochs: int) -> str:
    """``"empty"`` (no run artifacts), ``"interrupted"`` (a checkpoint short of ``epochs`` or no final
    model) or ``"finished"``."""
    if not any((run.root / a).exists() for a in RUN_ARTIFACTS):
        return "empty"
    if run.checkpoint.exists() and not _checkpoint_complete(run, epochs):
        return "interrupted"
    return "finished"


def check_resume_recipe(run: RunFolder, recipe: Recipe) -> None:
    """Refuse to resume with a recipe that differs from the recorded one (beyond the allow-list)."""
    from edgekd.recipe import RESUME_MAY_CHANGE, recipe_from_dict, resume_differences
    from edgekd.yamlio import safe_load

    if not run.recipe.exists():
        raise EdgekdError(f"{run.recipe}: missing, so the run cannot be resumed safely; use --overwrite")
    try:
        recorded = recipe_from_dict(safe_load(run.recipe.read_text()), str(run.recipe)).to_dict()
    except (EdgekdError, ValueError, UnicodeDecodeError) as e:
        raise EdgekdError(
            f"{run.recipe}: unreadable recorded recipe ({e}); use --overwrite to start again"
        ) from None
    diff = resume_differences(recorded, recipe.to_dict())
    if diff:
        raise EdgekdError(
            f"{run.root}: --resume with a recipe that differs from the recorded one in {', '.join(diff)}; "
            f"only {', '.join(RESUME_MAY_CHANGE)} may change on resume; restore them or use --overwrite"
        )


def move_aside(root: Path) -> Path:
    """Rename ``root`` to ``root.old-<timestamp>`` (never deleting anything)."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = root.with_name(f"{root.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = root.with_name(f"{root.name}.old-{stamp}-{n}")
    root.rename(target)
    return target


def _errors_on_classes(model: nn.Module, splits: DataSplits, classes: list[int]) -> dict[str, int]:
    import numpy as np
    import torch

    with torch.no_grad():
        model.eval()
        pred = model(torch.from_numpy(splits.test.x)).argmax(1).numpy()
    return {str(c): int(((splits.test.y == c) & (pred != c)).sum()) for c in classes} | {
        "all": int((pred != splits.test.y).sum()),
        "count": int(np.isin(splits.test.y, classes).sum()),
    }


def _checkpoint_complete(run: RunFolder, epochs: int) -> bool:
    """True when the checkpoint is from a finished run (then a new run may overwrite the folder)."""
    from edgekd.models.checkpoint import read_checkpoint

    try:
        return int(read_checkpoint(run.checkpoint).get("epoch", -1)) >= epochs and (
            run.model.exists() or run.student.exists()
        )
    except EdgekdError:
        return False
