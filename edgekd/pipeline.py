"""``edgekd run RECIPE``: teacher (trained if needed) -> [baseline] -> distill -> export -> profile.

Each stage reads only what the stage before wrote into the run folder, so any stage can be re-run alone.
Layout: ``runs/<name>/`` is the distilled student's run folder; a teacher trained here lives in
``runs/<name>/teacher/`` and the label-only baseline in ``runs/<name>/baseline/``.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from edgekd.data.prepare import prepare_data
from edgekd.distill.runner import run_or_reuse
from edgekd.errors import EdgekdError
from edgekd.recipe import MethodConfig, Recipe, SchemeConfig, recipe_from_dict
from edgekd.runfolder import RunFolder
from edgekd.safetext import markup


def _final_accuracy(run: RunFolder) -> float | None:
    """Test top-1 (classification) or, for autoencoders, the test AUC of the anomaly score."""
    try:
        final = json.loads(run.metrics.read_text())["final"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return None
    return final.get("test_accuracy", final.get("test_auc"))


def _teacher_recipe(recipe: Recipe) -> Recipe:
    assert recipe.teacher is not None and recipe.teacher.model is not None
    train = recipe_from_dict(
        {"train": {**recipe.to_dict()["train"], **recipe.teacher.train}}, "recipe (teacher.train)"
    ).train
    return replace(recipe, name="teacher", model=copy.deepcopy(recipe.teacher.model), method=MethodConfig("supervised"),
                   teacher=None, train=train, **_LABELS_ONLY)  # fmt: skip


# a teacher or a baseline trained here learns from the task's own target: no losses, stages or scheme
_LABELS_ONLY: dict[str, Any] = {"losses": [], "stages": [], "scheme": SchemeConfig()}


def run_pipeline(
    recipe: Recipe,
    runs_dir: str | Path = "runs",
    *,
    skip_export: bool = False,
    skip_profile: bool = False,
    progress: bool = True,
    console: Console | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run every stage of ``recipe``; returns a summary with paths and accuracies.

    A folder that already holds a pipeline run is refused unless ``resume`` (finished stages are reused,
    an interrupted one continues from its checkpoint, with the same recipe) or ``overwrite`` (the old
    folder is moved aside first). User models (``module:Class``) named in the recipe are trusted when the
    later stages read them back from the run folder: the user typed them.
    """
    from edgekd.models.registry import trust_model_code

    console = console or Console()
    run = RunFolder.named(runs_dir, recipe.name)
    # the whole folder (teacher/ included); --resume on an empty folder starts the run: nothing is reused yet
    claim = run.claim(resume, overwrite, epochs=recipe.train.epochs, resume_may_start=True)
    splits = prepare_data(recipe)
    names = [recipe.model.name] + (
        [recipe.teacher.model.name] if recipe.teacher and recipe.teacher.model else []
    )
    with contextlib.ExitStack() as held:  # the run folder is locked while the stages write it
        moved = held.enter_context(claim.hold())
        if moved is not None:
            console.print(f"moved the previous run to {moved}")
        held.enter_context(trust_model_code(names))
        return _run_stages(
            recipe, run, runs_dir, splits, skip_export, skip_profile, progress, console, resume
        )


def _teacher_stage(recipe: Recipe, run: RunFolder, runs_dir: str | Path, splits: Any, progress: bool,
                   console: Console, resume: bool, summary: dict[str, Any]) -> str | None:  # fmt: skip
    """Stage 1: the teacher's path (``teacher.path``, or trained into ``run/teacher/`` from
    ``teacher.model``); its accuracy goes into ``summary``. None: no teacher, or an ensemble (``paths``)."""
    teacher_path = recipe.teacher.path if recipe.teacher else None
    if recipe.teacher is not None and not teacher_path and not recipe.teacher.paths:
        if recipe.teacher.model is None:
            raise EdgekdError(
                "recipe: key 'teacher' needs either 'path' (a trained teacher) or 'model' (to train one)"
            )
        console.rule("[bold]1. teacher")
        t_run = run_or_reuse(
            _teacher_recipe(recipe), run.root, resume=resume, distill=False, progress=progress, splits=splits
        )
        summary["teacher_accuracy"] = _final_accuracy(t_run)
        return str(t_run.root)
    if teacher_path:
        teacher_file = RunFolder.resolve_model(teacher_path, runs_dir)
        summary["teacher_accuracy"] = _final_accuracy(RunFolder(teacher_file.parent))
        return str(teacher_file)
    return None


def _run_stages(recipe: Recipe, run: RunFolder, runs_dir: str | Path, splits: Any, skip_export: bool,
                skip_profile: bool, progress: bool, console: Console, resume: bool) -> dict[str, Any]:  # fmt: skip
    summary: dict[str, Any] = {"run": str(run.root), "task": splits.task}

    teacher_path = _teacher_stage(recipe, run, runs_dir, splits, progress, console, resume, summary)
    teacher_paths = list(recipe.teacher.paths) if recipe.teacher else []  # an ensemble of trained teachers

    if recipe.baseline:
        console.rule("[bold]2. baseline student (labels only)")
        b_recipe = replace(
            recipe, name="baseline", method=MethodConfig("supervised"), teacher=None, **_LABELS_ONLY
        )
        b_run = run_or_reuse(
            b_recipe, run.root, resume=resume, distill=False, progress=progress, splits=splits
        )
        summary["baseline_accuracy"] = _final_accuracy(b_run)

    distill = bool(teacher_path or teacher_paths) and (
        recipe.method.name != "supervised" or bool(recipe.losses or recipe.stages)
    )
    how = " + ".join(loss.name for loss in recipe.losses) if recipe.losses else recipe.method.name
    console.rule(f"[bold]3. {'distill' if distill else 'train'} student ({how})")
    # keep the recipe's teacher settings (input, combine, paths); only a teacher trained here sets the path
    s_recipe = replace(recipe, teacher=replace(recipe.teacher, path=teacher_path, model=None, train={})
                       if teacher_path or teacher_paths else None)  # fmt: skip
    run_or_reuse(
        s_recipe, runs_dir, resume=resume, distill=distill, progress=progress, splits=splits, run_dir=run.root
    )
    summary["student_accuracy"] = _final_accuracy(run)
    summary["student_distilled"] = distill
    summary["method"] = recipe.method.name

    if not skip_export:
        from edgekd.export import ExportOptions, export_run

        exports = {}
        for target in recipe.export.targets:
            console.rule(f"[bold]4. export for {target}")
            exports[target] = str(export_run(run.root, ExportOptions.for_recipe(recipe.export, target)))
        summary["exports"] = exports

    if not skip_profile:
        from edgekd.profile import ProfileOptions, profile_run

        console.rule("[bold]5. profile")
        profile_run(run.root, ProfileOptions.from_recipe(recipe))
        summary["report"] = str(run.report("html"))
    return summary


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _mcu_latency(report: dict[str, Any] | None, export_dir: str) -> dict[str, float]:
    """Estimated on-board latency (ms) per target of the int8 file in ``export_dir``, from report.json."""
    for row in (report or {}).get("artifacts", []):
        if row.get("runtime") == "tflm" and str(Path(row.get("path", "")).parent) == str(Path(export_dir)):
            return {t: e["latency_ms"] for t, e in (row.get("mcu_estimate") or {}).items()}
    return {}


def headline(summary: dict[str, Any]) -> list[list[str]]:
    """One row per export target: int8 accuracy on TFLite Micro, flash, RAM, estimated latency, fit."""
    report_path = Path(summary["report"]).with_suffix(".json") if summary.get("report") else None
    report = _read_json(report_path) if report_path else None
    rows = []
    for target, folder in summary.get("exports", {}).items():
        rec = _read_json(Path(folder) / "export.json") or {}
        c = rec.get("checks", {})
        acc = c.get("int8_accuracy")
        runtime = {"tflite-micro": "TFLM", "litert": "LiteRT"}.get(c.get("int8_runtime"), "?")
        arena = ((rec.get("micro") or {}).get("arena") or {}).get("tflm", {}).get("total")
        flash = (rec.get("tflite", {}).get("int8") or {}).get("bytes")
        fit = rec.get("fit") or {}
        lat = _mcu_latency(report, folder).get(target)
        fits = {True: "fits", False: "DOES NOT FIT", None: "-"}[fit.get("fits")]
        rows.append([target, "-" if acc is None else f"{100 * acc:.2f}% {runtime}",
                     "-" if flash is None else f"{flash / 1024:.1f} KiB", "-" if arena is None else f"{arena / 1024:.1f} KiB",
                     "-" if lat is None else f"~{lat:.2f} ms", fits])  # fmt: skip
    return rows


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """The headline: accuracies (teacher, baseline, distilled; int8 on the device runtime), and per
    target flash, RAM (TFLite Micro arena), estimated latency and fit; where the files and report are."""
    from rich.table import Table

    console = console or Console()
    auc = summary.get("task") == "reconstruction"
    t = Table(title=f"edgekd run: {'anomaly AUC' if auc else 'test accuracy'}")
    t.add_column("model")
    t.add_column("test AUC (reconstruction error)" if auc else "test top-1", justify="right")
    student = (
        "student, distilled"
        if summary.get("student_distilled", True)
        else f"student ({summary.get('method', 'trained')})"
    )
    for key, label in (("teacher_accuracy", "teacher"), ("baseline_accuracy", "student, labels only"),
                       ("student_accuracy", student)):  # fmt: skip
        if summary.get(key) is not None:
            t.add_row(label, f"{summary[key]:.4f}" if auc else f"{100 * summary[key]:.2f}%")
    console.print(t)
    rows = headline(summary)
    if rows:
        teacher = summary.get("teacher_accuracy")
        title = "on the device: the int8 student" + (
            f" (float teacher {100 * teacher:.2f}%)" if teacher else ""
        )
        h = Table(
            title=title, caption="latency: MACs x cycles/MAC / clock, an estimate; RAM: TFLite Micro arena"
        )
        for col in ("target", "int8 top-1", "flash", "RAM", "latency", "fit"):
            h.add_column(col, justify="left" if col in ("target", "fit") else "right")
        for r in rows:
            h.add_row(*(markup(c) for c in r))
        console.print(h)
    console.print(f"run folder: {summary['run']}")
    for target, path in summary.get("exports", {}).items():
        console.print(f"export {target}: {path}")
    if "report" in summary:
        console.print(f"report: {summary['report']}")


__all__ = ["headline", "print_summary", "run_pipeline"]
