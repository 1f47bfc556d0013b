"""What ``edgekd train`` and ``edgekd distill`` do: recipe -> data, models, method -> trained run folder."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.atomic import atomic_write_json, atomic_write_text
from edgekd.data import DataSplits
from edgekd.data.augment import Augmentation, check_shapes
from edgekd.data.prepare import prepare_data
from edgekd.distill.methods import build_method
from edgekd.distill.qat import FakeQuantizer
from edgekd.distill.results import write_results, write_run_inputs, write_scheme_results
from edgekd.distill.schemes import SchemeContext, build_scheme
from edgekd.distill.schemes.base import TrainOnce
from edgekd.distill.train import (
    Stage,
    Trainer,
    TrainingDiverged,
    resolve_device,
    seed_everything,
    stage_param_groups,
)
from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model, save_model
from edgekd.recipe import Recipe, TeacherConfig, augment_specs, dump_recipe
from edgekd.runfolder import CHAIN_RUNS, RunFolder


def load_teacher(
    path: str | Path, splits: DataSplits, runs_dir: str | Path | None = None
) -> tuple[nn.Module, Path]:
    ckpt = RunFolder.resolve_model(path, runs_dir)
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
    run = RunFolder.named(runs_dir, recipe.name, run_dir)
    claim = run.claim(resume, overwrite, keep=CHAIN_RUNS, epochs=recipe.train.epochs, check_lock=ctx.is_main)
    if resume:
        check_resume_recipe(run, recipe)
    splits = splits or prepare_data(recipe)
    teacher, teacher_files = load_run_teachers(recipe, splits, runs_dir) if distill else (None, [])
    kwargs = model_kwargs(recipe.model.kwargs, splits)
    seed_everything(recipe.seed)  # model initialisation is part of the recorded seed
    student = build_model(recipe.model.name, **kwargs)
    init_file = load_initial_weights(student, recipe, kwargs, runs_dir)
    stages = build_stages(recipe, student, teacher, splits, kwargs)
    check_stages(recipe, stages, ctx.world_size)
    augmentation = run_augmentation(recipe, splits)  # transforms that fit this data, checked before writing
    ctx.barrier()  # every rank has validated the same state before rank 0 changes the folder

    # --- validated: from here on the run folder changes (rank 0 only writes, holding its lock) ------
    with contextlib.ExitStack() as held:
        if ctx.is_main:
            held.enter_context(claim.hold())
            write_run_inputs(run, recipe, splits, teacher_files, init_file)
        _fit_and_write(run, recipe, splits, stages, kwargs, distill, resume, progress, runs_dir,
                       stop_after_epoch, augmentation)  # fmt: skip
    ctx.barrier()  # the other ranks return once the run folder is complete
    return run


def load_initial_weights(student: nn.Module, recipe: Recipe, kwargs: dict[str, Any],
                         runs_dir: str | Path) -> Path | None:  # fmt: skip
    """Load ``model.init`` (a run folder or checkpoint of the same model and kwargs) into ``student``;
    the file used (None without ``model.init``)."""
    if not recipe.model.init:
        return None
    path = RunFolder.resolve_model(recipe.model.init, runs_dir)
    model, record = load_model(path)
    plain = json.loads(json.dumps(kwargs, default=list))  # as the checkpoint stores them (tuples as lists)
    same = record.get("name") == recipe.model.name and record.get("kwargs") == plain
    if not same:
        raise EdgekdError(
            f"recipe: key 'model.init' names {path}, a {record.get('name')!r} network with {record.get('kwargs')}; "
            f"the recipe builds {recipe.model.name!r} with {kwargs}; point it at a run of the same model"
        )
    student.load_state_dict(model.state_dict())
    return path


def run_or_reuse(recipe: Recipe, runs_dir: str | Path, *, resume: bool, run_dir: str | Path | None = None,
                 **kw: Any) -> RunFolder:  # fmt: skip
    """One run of a chain (a scheme's runs, the stages of `edgekd run`): with ``resume`` a finished run is
    reused and a partial one continues from its checkpoint; ``kw`` go to :func:`run_training`."""
    run = RunFolder.named(runs_dir, recipe.name, run_dir)
    holds = run.state(recipe.train.epochs, CHAIN_RUNS).holds
    if resume and holds == "finished":
        return run
    return run_training(recipe, runs_dir, resume=resume and holds == "partial", run_dir=run_dir, **kw)


def load_run_teachers(
    recipe: Recipe, splits: DataSplits, runs_dir: str | Path
) -> tuple[nn.Module, list[Path]]:
    """The teacher(s) ``edgekd distill`` needs, checked against the recipe's method and the data."""
    tc = recipe.teacher
    if tc is None or not (tc.path or tc.paths):
        raise EdgekdError("recipe: key 'teacher.path' is required for distill (a run folder or checkpoint)")
    if recipe.method.name == "supervised" and not (recipe.losses or recipe.stages):
        raise EdgekdError(
            "recipe: key 'method.name' is 'supervised'; choose a distillation method, e.g. kd, or list `losses`"
        )
    return load_teachers(tc, splits, runs_dir)


def check_stages(recipe: Recipe, stages: list[Stage], world_size: int) -> None:
    """Fail before writing: every stage has parameters to train, a usable device and a batch that the
    world size divides."""
    from edgekd.distill import distributed

    for k, st in enumerate(stages):
        where = f"stages[{k}]" if recipe.stages else "train"
        if st.cfg.qat and k + 1 < len(stages):
            raise EdgekdError(
                f"recipe: key '{where}.train.qat' is true but a later stage trains in float and would undo "
                "it; set qat only in the last stage"
            )
        stage_param_groups(st, where)
        resolve_device(st.cfg.device)
        distributed.check_batch(st.cfg.batch_size, world_size, f"{where}.train.batch_size" if recipe.stages
                                else "train.batch_size")  # fmt: skip


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
        """The recipe's method, or its loss preset; a `losses:` list replaces the default preset
        (:mod:`edgekd.distill.losses.presets`)."""
        return build_method(recipe.method.name, student, teacher, recipe.method.params, losses=losses or None,
                            where=where, **context)  # fmt: skip

    if not recipe.stages:
        stages = [Stage("train", method_for(recipe.losses, "losses"), recipe.train)]
    else:
        stages = []
        for i, sc in enumerate(recipe.stages):
            where = f"stages[{i}]"
            train = {**recipe.to_dict()["train"], **sc.train, "epochs": sc.epochs}
            cfg = recipe_from_dict({"train": train}, f"recipe ({where}.train)").train
            d = method_for(list(sc.losses) or list(recipe.losses), f"{where}.losses")
            stages.append(Stage(sc.name or f"stage{i + 1}", d, cfg, sc.trainable))
    for st in stages:
        if st.cfg.qat:  # the int8 simulation, a part of the distiller's state (checkpointed)
            st.distiller.fake_quant = st.quantizer = FakeQuantizer(student, context["sample_x"])
    return stages


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

    scheme = build_scheme(recipe.scheme.name, recipe.scheme.params)
    run = RunFolder.named(runs_dir, recipe.name, run_dir)
    ctx = distributed.current()
    claim = run.claim(resume, overwrite, keep=CHAIN_RUNS, check_lock=ctx.is_main)
    if resume:
        check_resume_recipe(run, recipe)
    splits = splits or prepare_data(recipe)
    teacher = None
    if distill:
        if recipe.teacher is None or not recipe.teacher.path:
            raise EdgekdError(
                f"scheme {recipe.scheme.name!r}: needs one teacher in 'teacher.path' to start the chain"
            )
        teacher = str(RunFolder.resolve_model(recipe.teacher.path, runs_dir))
    build_model(recipe.model.name, **model_kwargs(recipe.model.kwargs, splits))  # fail before writing
    ctx.barrier()
    with contextlib.ExitStack() as held:
        if ctx.is_main:
            held.enter_context(claim.hold())
            atomic_write_text(run.recipe, dump_recipe(recipe))
            atomic_write_json(
                run.seeds, {"seed": recipe.seed, "data_split_seed": recipe.seed, "scheme": recipe.scheme.name}
            )
            atomic_write_json(run.data_info, splits.describe())
        train_once = _chain_trainer(splits, resume, progress)
        runs = scheme.run(SchemeContext(recipe, run.root, splits, train_once, teacher))
        if ctx.is_main:
            write_scheme_results(recipe, run, runs, teacher, distill)
    ctx.barrier()
    return run


def _chain_trainer(splits: DataSplits, resume: bool, progress: bool) -> TrainOnce:
    """A scheme's ``train_once(recipe, folder, teacher)``: one ordinary run on the loaded ``splits``;
    ``teacher`` is a model path, or several (an ensemble, outputs averaged)."""

    def train_once(r: Recipe, folder: Path, t: str | list[str] | None) -> RunFolder:
        if isinstance(t, list):
            r = replace(r, teacher=TeacherConfig(paths=t, combine="mean-logits"))
        else:
            r = replace(r, teacher=TeacherConfig(path=t) if t else None)
        return run_or_reuse(r, folder.parent, resume=resume, distill=t is not None, progress=progress,
                            run_dir=folder, splits=splits)  # fmt: skip

    return train_once
