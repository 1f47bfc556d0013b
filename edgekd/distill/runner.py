"""What ``edgekd train`` and ``edgekd distill`` do: recipe -> data, models, method -> trained run folder."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgekd.data import DataSplits, load_data
from edgekd.data.augment import Augmentation, check_shapes
from edgekd.distill.bias import tune_class_bias
from edgekd.distill.engine import (
    Stage,
    Trainer,
    TrainingDiverged,
    plot_curves,
    resolve_device,
    seed_everything,
    stage_param_groups,
    write_metrics,
)
from edgekd.distill.methods import build_method
from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model, save_model
from edgekd.recipe import Recipe, augment_specs, dump_recipe
from edgekd.runfolder import LOCK_FILE, RunFolder

log = logging.getLogger(__name__)


def prepare_data(recipe: Recipe) -> DataSplits:
    """Load the recipe's data set with its seeded splits (and few-shot subset when asked)."""
    d = recipe.data
    splits = load_data(
        d.name, seed=recipe.seed if d.split_seed is None else d.split_seed, val_fraction=d.val_fraction,
        test_fraction=d.test_fraction, train_fraction=d.train_fraction, exclude_classes=d.exclude_classes, options=d.options,
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
    from edgekd.distill import distributed

    ctx = distributed.init(recipe.train.device)
    if recipe.scheme.name != "single":
        return run_scheme(recipe, runs_dir, distill=distill, resume=resume, overwrite=overwrite, progress=progress,
                          run_dir=run_dir, splits=splits)  # fmt: skip
    run = RunFolder(run_dir or Path(runs_dir) / recipe.name)
    if ctx.is_main:
        run.check_unlocked()  # another process writing it: refuse before loading anything
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
    teacher, teacher_files = None, []
    method = recipe.method
    composed = bool(recipe.losses or recipe.stages)
    if distill:
        tc = recipe.teacher
        if tc is None or not (tc.path or tc.paths):
            raise EdgekdError(
                "recipe: key 'teacher.path' is required for distill (a run folder or checkpoint)"
            )
        if method.name == "supervised" and not composed:
            raise EdgekdError(
                "recipe: key 'method.name' is 'supervised'; choose a distillation method, e.g. kd, or list `losses`"
            )
        teacher, teacher_files = load_teachers(tc, splits, runs_dir)
    kwargs = model_kwargs(recipe.model.kwargs, splits)
    seed_everything(recipe.seed)  # model initialisation is part of the recorded seed
    student = build_model(recipe.model.name, **kwargs)
    stages = build_stages(recipe, student, teacher, splits, kwargs)
    for k, st in enumerate(stages):  # fail before writing: parameters to train, the device
        stage_param_groups(st, f"stages[{k}]" if recipe.stages else "train")
        resolve_device(st.cfg.device)
        distributed.check_batch(st.cfg.batch_size, ctx.world_size,
                                f"stages[{k}].train.batch_size" if recipe.stages else "train.batch_size")  # fmt: skip
    augmentation = run_augmentation(recipe, splits)  # transforms that fit this data, checked before writing
    ctx.barrier()  # every rank has validated the same state before rank 0 changes the folder

    # --- validated: from here on the run folder changes (rank 0 only writes, holding its lock) ------
    with contextlib.ExitStack() as held:
        if ctx.is_main:
            claim_run_folder(run, held, lambda: run_state(run, recipe.train.epochs), state,
                             move=overwrite and state != "empty" and not resume)  # fmt: skip
            write_run_inputs(run, recipe, splits, teacher_files)
        _fit_and_write(run, recipe, splits, stages, kwargs, distill, resume, progress, runs_dir,
                       stop_after_epoch, augmentation)  # fmt: skip
    ctx.barrier()  # the other ranks return once the run folder is complete
    return run


def _fit_and_write(run: RunFolder, recipe: Recipe, splits: DataSplits, stages: list[Stage], kwargs: dict[str, Any],
                   distill: bool, resume: bool, progress: bool, runs_dir: str | Path,
                   stop_after_epoch: int | None, augmentation: Augmentation | None) -> None:  # fmt: skip
    """Train the validated stages into ``run`` and write its results (the final network, metrics)."""
    from edgekd.distill import distributed

    ctx = distributed.current()
    method, distiller = recipe.method, stages[-1].distiller
    label = f"{'distill' if distill else 'train'} {recipe.name}"
    trainer = Trainer(
        stages,
        None,
        run,
        seed=recipe.seed,
        augmentation=augmentation,
        teacher_views=recipe.train.teacher_views,
        num_classes=splits.num_classes,
        progress=progress,
        label=label,
        task=splits.task,
        cache_dir=teacher_cache_dir(recipe, runs_dir) if distill else None,
        preprocessing={
            "data": splits.name,
            "normalisation": [splits.mean, splits.std],
            "options": recipe.data.options,
        },  # fmt: skip
    )
    out = run.student if distill else run.model
    try:
        result = trainer.fit(
            splits.train, splits.val, splits.test, resume=resume, stop_after_epoch=stop_after_epoch
        )
    except TrainingDiverged as e:
        if e.last_good_epoch is None or not ctx.is_main:
            raise
        # the distiller now holds the last good epoch's weights: keep them usable (exportable)
        model = distiller.export_student()
        save_model(out, model, recipe.model.name, kwargs,
                   meta={"method": method.name, "seed": recipe.seed, "diverged": str(e),
                         "epoch": e.last_good_epoch})  # fmt: skip
        raise EdgekdError(
            f"{e}; {out.name} holds epoch {e.last_good_epoch}, the last good one, and can still be exported"
        ) from None
    if ctx.is_main:
        write_results(run, recipe, splits, distiller, result, out, kwargs, label, trainer.speed)


def run_augmentation(recipe: Recipe, splits: DataSplits) -> Augmentation | None:
    """The recipe's transforms (``data.jitter``, then ``data.augment``) checked against the loaded data."""
    specs = augment_specs(recipe, splits.task)
    if not specs:
        return None
    check_shapes(specs, tuple(splits.input_shape))
    return Augmentation(specs, recipe.seed)


def teacher_cache_dir(recipe: Recipe, runs_dir: str | Path) -> Path | None:
    """Where teacher outputs are cached (None: ``train.cache_teacher`` is off)."""
    if not recipe.train.cache_teacher:
        return None
    return Path(recipe.train.cache_dir) if recipe.train.cache_dir else Path(runs_dir) / ".teacher-cache"


def claim_run_folder(
    run: RunFolder, held: contextlib.ExitStack, state_now: Callable[[], Any], state: Any, move: bool
) -> Path | None:
    """Lock ``run`` for this process until ``held`` closes (another edgekd process is refused), check that
    its state (``state_now()``) is still the validated ``state``, and move the previous run aside if asked
    (returns where it went)."""
    held.enter_context(run.lock())
    if state_now() != state:
        raise EdgekdError(
            f"{run.root}: changed while this run was being prepared (another edgekd process?); run again"
        )
    if not move:
        return None
    moved = move_aside(run.root)
    log.info("moved the previous run to %s", moved)
    held.enter_context(run.lock())  # the new, empty folder
    return moved


def write_run_inputs(run: RunFolder, recipe: Recipe, splits: DataSplits, teacher_files: list[Path]) -> None:
    """The run folder before training: teachers, recipe, seeds, data."""
    run.ensure()
    for i, f in enumerate(teacher_files):  # copies of the teachers used (teacher.pt, teacher-2.pt, ...)
        dst = run.teacher if i == 0 else run.root / f"teacher-{i + 1}.pt"
        if not (dst.exists() and dst.samefile(f)):
            atomic_write_bytes(dst, Path(f).read_bytes())
    atomic_write_text(run.recipe, dump_recipe(recipe))
    atomic_write_json(run.seeds, {"seed": recipe.seed, "data_split_seed": recipe.seed,
                                  "few_shot_seed": recipe.data.few_shot.seed if recipe.data.few_shot else None})  # fmt: skip
    atomic_write_json(run.data_info, splits.describe())


def write_results(run: RunFolder, recipe: Recipe, splits: DataSplits, distiller: Any, result: Any, out: Path,
                  kwargs: dict[str, Any], label: str, speed: dict[str, Any]) -> None:  # fmt: skip
    """The run folder after training: final network(s), metrics, curves and what made it fast."""
    method = recipe.method
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
    save_networks(run, distiller, recipe, kwargs, out, final_model)
    write_metrics(run, result, extra)
    atomic_write_json(run.root / "speed.json", speed)
    plot_curves(run, result.history, label)


def load_teachers(tc: Any, splits: DataSplits, runs_dir: str | Path | None) -> tuple[nn.Module, list[Path]]:
    """One teacher, or an ensemble combined by ``teacher.combine``; checks the privileged input name."""
    from edgekd.models.ensemble import WeightedEnsemble

    if tc.input != "x" and tc.input not in splits.train.extra:
        have = ", ".join(sorted(splits.train.extra)) or "none"
        raise EdgekdError(
            f"recipe: teacher.input={tc.input!r} is not a privileged input of the data set (has: {have})"
        )
    if tc.input != "x":
        shape = tuple(splits.train.extra[tc.input].shape[1:])
        splits = replace(splits, input_shape=shape)
    paths = [tc.path] if tc.path else list(tc.paths)
    loaded = [load_teacher(p, splits, runs_dir) for p in paths]
    files = [f for _, f in loaded]
    if len(loaded) == 1:
        return loaded[0][0], files
    return WeightedEnsemble([m for m, _ in loaded], tc.combine), files


def build_stages(
    recipe: Recipe, student: nn.Module, teacher: nn.Module | None, splits: DataSplits, kwargs: dict[str, Any]
) -> list[Stage]:
    """The recipe's stages (or one), each with its distiller; all share ``student`` (and its adapters
    per stage). Stage settings are the top-level ``train`` with the stage's overrides."""
    import torch

    from edgekd.recipe import recipe_from_dict

    context = {
        "task": splits.task,
        "sample_x": torch.from_numpy(splits.train.x[:2]),
        "teacher_input": recipe.teacher.input if recipe.teacher else "x",
        "model_factory": lambda: build_model(recipe.model.name, **kwargs),
    }

    def method_for(losses: list, where: str) -> Any:
        name = recipe.method.name
        if losses and name == "supervised":
            name = "compose"
        if name == "compose" and not losses:
            raise EdgekdError(f"{where}: method 'compose' needs a `losses:` list")
        return build_method(name, student, teacher, recipe.method.params, losses=losses or None, where=where,
                            **context)  # fmt: skip

    if not recipe.stages:
        return [Stage("train", method_for(recipe.losses, "losses"), recipe.train)]
    stages = []
    for i, sc in enumerate(recipe.stages):
        where = f"stages[{i}]"
        train = {**recipe.to_dict()["train"], **sc.train, "epochs": sc.epochs}
        cfg = recipe_from_dict({"train": train}, f"recipe ({where}.train)").train
        d = method_for(list(sc.losses) or list(recipe.losses), f"{where}.losses")
        stages.append(Stage(sc.name or f"stage{i + 1}", d, cfg, sc.trainable))
    return stages


def save_networks(
    run: RunFolder,
    distiller: Any,
    recipe: Recipe,
    kwargs: dict[str, Any],
    final: Path,
    final_model: nn.Module,
) -> None:
    """Record every network the method produced in ``networks.json``; extra ones (peers, branches) are
    saved beside the final student as ``network-<name>.pt``. The final student is the one that
    ``edgekd export`` / ``edgekd profile`` pick (``student.pt``, else ``model.pt``)."""
    nets = distiller.networks() or {"student": final_model}
    record = {"final": final.name, "rule": "export and profile use student.pt, else model.pt", "networks": {}}
    for name, net in nets.items():
        if net is final_model:
            record["networks"][name] = final.name
            continue
        path = run.root / f"network-{name}.pt"
        # a network of another architecture (e.g. an early-exit head) names itself as (model, kwargs)
        model_name, model_kw = getattr(net, "edgekd_model", (recipe.model.name, kwargs))
        save_model(path, net, model_name, model_kw, meta={"network": name, "method": recipe.method.name})
        record["networks"][name] = path.name
    atomic_write_json(run.root / "networks.json", record)


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
    if not (run.model.exists() or run.student.exists()):
        return "interrupted"  # started (recipe written) but no final network yet
    return "finished"


def check_resume_recipe(run: RunFolder, recipe: Recipe) -> None:
    """Refuse to resume with a recipe that differs from the recorded one (beyond the allow-list)."""
    from edgekd.recipe import RESUME_MAY_CHANGE, recipe_from_dict, resume_differences
    from edgekd.yamlio import read_yaml_file

    if not run.recipe.exists():
        raise EdgekdError(f"{run.recipe}: missing, so the run cannot be resumed safely; use --overwrite")
    try:
        recorded = recipe_from_dict(read_yaml_file(run.recipe, "recorded recipe"), str(run.recipe)).to_dict()
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
    """True when the checkpoint has reached ``epochs`` (run_state also asks for the final network)."""
    from edgekd.models.checkpoint import read_checkpoint

    try:
        return int(read_checkpoint(run.checkpoint).get("epoch", -1)) >= epochs
    except EdgekdError:
        return False


def run_scheme(
    recipe: Recipe,
    runs_dir: str | Path,
    *,
    distill: bool,
    resume: bool,
    overwrite: bool,
    progress: bool,
    run_dir: str | Path | None = None,
    splits: DataSplits | None = None,
) -> RunFolder:
    """A scheme of several ordinary runs inside ``runs_dir/<name>/`` (e.g. Born-Again generations).

    The final network is copied to the root as ``student.pt`` (``model.pt`` without a teacher); every
    run's network is listed in ``networks.json``; ``metrics.json`` holds each run's final metrics.
    """
    from edgekd.distill import distributed
    from edgekd.distill.schemes import build_scheme

    scheme = build_scheme(recipe.scheme.name, recipe.scheme.params)
    run = RunFolder(run_dir or Path(runs_dir) / recipe.name)
    ctx = distributed.current()
    if ctx.is_main:
        run.check_unlocked()
    occupied = _scheme_occupied(run)
    if resume and not occupied:
        raise EdgekdError(f"{run.root}: nothing to resume; run without --resume")
    if resume:
        check_resume_recipe(run, recipe)
    elif occupied and not overwrite:
        raise EdgekdError(
            f"{run.root}: holds a previous run; pass --resume to continue it, --overwrite to move it aside and "
            "start again, or choose another name (--set name=...)"
        )
    splits = splits or prepare_data(recipe)
    teacher = None
    if distill:
        if recipe.teacher is None or not recipe.teacher.path:
            raise EdgekdError(
                f"scheme {recipe.scheme.name!r}: needs one teacher in 'teacher.path' to start the chain"
            )
        teacher = str(resolve_teacher_path(recipe.teacher.path, runs_dir))
    build_model(recipe.model.name, **model_kwargs(recipe.model.kwargs, splits))  # fail before writing
    ctx.barrier()
    with contextlib.ExitStack() as held:
        if ctx.is_main:
            claim_run_folder(run, held, lambda: _scheme_occupied(run), occupied,
                             move=occupied and overwrite and not resume)  # fmt: skip
            atomic_write_text(run.recipe, dump_recipe(recipe))
            atomic_write_json(
                run.seeds, {"seed": recipe.seed, "data_split_seed": recipe.seed, "scheme": recipe.scheme.name}
            )
            atomic_write_json(run.data_info, splits.describe())
        return _run_scheme_runs(scheme, recipe, run, splits, teacher, distill, resume, progress)


def _scheme_occupied(run: RunFolder) -> bool:
    """True when ``run`` holds anything but what `edgekd run` trains first (teacher/, baseline/) and the lock."""
    keep = ("teacher", "baseline", LOCK_FILE)
    return run.root.is_dir() and any(p.name not in keep for p in run.root.iterdir())


def _run_scheme_runs(scheme: Any, recipe: Recipe, run: RunFolder, splits: DataSplits, teacher: str | None,
                     distill: bool, resume: bool, progress: bool) -> RunFolder:  # fmt: skip
    """The scheme's runs inside the locked ``run``, then its final network, networks.json and metrics."""
    from edgekd.distill import distributed
    from edgekd.recipe import TeacherConfig

    ctx = distributed.current()

    def train_once(r: Recipe, folder: Path, t: str | list[str] | None) -> RunFolder:
        """One ordinary run; ``t`` is a teacher path, or several (an ensemble, outputs averaged)."""
        sub = RunFolder(folder)
        state = run_state(sub, r.train.epochs)
        if resume and state == "finished":
            return sub
        if isinstance(t, list):
            r = replace(r, teacher=TeacherConfig(paths=t, combine="mean-logits"))
        else:
            r = replace(r, teacher=TeacherConfig(path=t) if t else None)
        return run_training(r, folder.parent, distill=t is not None, resume=resume and state == "interrupted",
                            progress=progress, run_dir=folder, splits=splits)  # fmt: skip

    runs = scheme.run(recipe, run.root, train_once, teacher)
    if not ctx.is_main:
        ctx.barrier()
        return run
    final = runs[-1].trained_model()
    out = run.student if distill else run.model
    atomic_write_bytes(out, final.read_bytes())
    if teacher is not None:
        atomic_write_bytes(run.teacher, Path(teacher).read_bytes())
    nets = {r.root.name: str(r.trained_model().relative_to(run.root)) for r in runs}
    atomic_write_json(run.root / "networks.json", {"final": out.name, "copied_from": nets[runs[-1].root.name],
                      "rule": "export and profile use student.pt, else model.pt", "networks": nets})  # fmt: skip
    per_run = {r.root.name: json.loads(r.metrics.read_text()).get("final", {}) for r in runs}
    history = json.loads(runs[-1].metrics.read_text()).get("history", [])
    atomic_write_json(run.metrics, {"scheme": recipe.scheme.name, "runs": per_run, "final": per_run[runs[-1].root.name],
                                    "history": history})  # fmt: skip
    ctx.barrier()
    return run
