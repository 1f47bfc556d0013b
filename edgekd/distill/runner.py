"""What ``edgekd train`` and ``edgekd distill`` do: recipe -> data, models, method -> trained run folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.atomic import atomic_write_json, atomic_write_text
from edgekd.data import DataSplits, load_data
from edgekd.distill.bias import tune_class_bias
from edgekd.distill.engine import Trainer, plot_curves, seed_everything, write_metrics
from edgekd.distill.methods import build_method
from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model, save_model
from edgekd.recipe import Recipe, dump_recipe
from edgekd.runfolder import RunFolder


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


def resolve_teacher_path(path: str | Path) -> Path:
    """A teacher is a run folder (its trained model) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        return RunFolder(p).trained_model()
    if not p.exists():
        raise EdgekdError(f"teacher.path={str(p)!r}: no such run folder or checkpoint; train a teacher first")
    return p


def load_teacher(path: str | Path, splits: DataSplits) -> tuple[nn.Module, Path]:
    ckpt = resolve_teacher_path(path)
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
    progress: bool = True,
    run_dir: str | Path | None = None,
    splits: DataSplits | None = None,
    stop_after_epoch: int | None = None,
) -> RunFolder:
    """Train (labels only) or distill (from ``recipe.teacher``) into ``runs_dir/<name>``."""
    run = RunFolder(run_dir or Path(runs_dir) / recipe.name).ensure()
    if not resume and run.checkpoint.exists() and not _checkpoint_complete(run, recipe.train.epochs):
        raise EdgekdError(
            f"{run.root}: an interrupted training checkpoint exists; pass --resume to continue it, "
            "or delete the folder / choose another name"
        )
    splits = splits or prepare_data(recipe)
    teacher = None
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
        teacher, teacher_ckpt = load_teacher(recipe.teacher.path, splits)
        shutil.copyfile(teacher_ckpt, run.root / ".teacher.pt.tmp")
        Path(run.root / ".teacher.pt.tmp").replace(run.teacher)
    kwargs = model_kwargs(recipe.model.kwargs, splits)
    seed_everything(recipe.seed)  # model initialisation is part of the recorded seed
    student = build_model(recipe.model.name, **kwargs)
    distiller = build_method(method.name, student, teacher, method.params)

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
    result = trainer.fit(
        splits.train, splits.val, splits.test, resume=resume, stop_after_epoch=stop_after_epoch
    )
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
    out = run.student if distill else run.model
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
