"""What a training run writes into its run folder: its inputs before training, its networks, metrics and
curves after (one run, or the runs of a scheme)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgekd.data import DataSplits
from edgekd.distill.bias import tune_class_bias
from edgekd.models import save_model
from edgekd.networks import FINAL_RULE, NETWORKS_FILE
from edgekd.recipe import Recipe, dump_recipe
from edgekd.runfolder import RunFolder, plot_curves, write_metrics


def write_run_inputs(run: RunFolder, recipe: Recipe, splits: DataSplits, teacher_files: list[Path],
                     init_file: Path | None = None) -> None:  # fmt: skip
    """The run folder before training: teachers, the initial weights (``init.pt``), recipe, seeds, data."""
    run.ensure()
    if init_file is not None and not (run.root / "init.pt").exists():
        atomic_write_bytes(run.root / "init.pt", Path(init_file).read_bytes())
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
        from edgekd.metrics.evaluate import evaluate

        result.final.update({f"test_{k}": v for k, v in evaluate(final_model, splits.test).items()})
    if recipe.data.exclude_classes:
        extra["test_errors_on_excluded"] = errors_on_classes(final_model, splits, recipe.data.exclude_classes)
    save_model(
        out,
        final_model,
        recipe.model.name,
        kwargs,
        meta={
            "method": method.name,
            "seed": recipe.seed,
            **result.final,
            **({"qat": result.qat} if result.qat else {}),
        },  # fmt: skip
    )
    save_networks(run, distiller, recipe, kwargs, out, final_model)
    write_metrics(run, result, extra)
    atomic_write_json(run.root / "speed.json", speed)
    plot_curves(run, result.history, label)


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
    record = {"final": final.name, "rule": FINAL_RULE, "networks": {}}
    for name, net in nets.items():
        if net is final_model:
            record["networks"][name] = final.name
            continue
        path = run.root / f"network-{name}.pt"
        # a network of another architecture (e.g. an early-exit head) names itself as (model, kwargs)
        model_name, model_kw = getattr(net, "edgekd_model", (recipe.model.name, kwargs))
        save_model(path, net, model_name, model_kw, meta={"network": name, "method": recipe.method.name})
        record["networks"][name] = path.name
    atomic_write_json(run.root / NETWORKS_FILE, record)


def errors_on_classes(model: nn.Module, splits: DataSplits, classes: list[int]) -> dict[str, int]:
    import numpy as np
    import torch

    with torch.no_grad():
        model.eval()
        pred = model(torch.from_numpy(splits.test.x)).argmax(1).numpy()
    return {str(c): int(((splits.test.y == c) & (pred != c)).sum()) for c in classes} | {
        "all": int((pred != splits.test.y).sum()),
        "count": int(np.isin(splits.test.y, classes).sum()),
    }


def write_scheme_results(
    recipe: Recipe, run: RunFolder, runs: list[RunFolder], teacher: str | None, distill: bool
) -> None:
    """The scheme's final network (its last run's), the teacher, networks.json and metrics.json."""
    final = runs[-1].trained_model()
    out = run.student if distill else run.model
    atomic_write_bytes(out, final.read_bytes())
    if teacher is not None:
        atomic_write_bytes(run.teacher, Path(teacher).read_bytes())
    nets = {r.root.name: str(r.trained_model().relative_to(run.root)) for r in runs}
    atomic_write_json(run.root / NETWORKS_FILE, {"final": out.name, "copied_from": nets[runs[-1].root.name],
                      "rule": FINAL_RULE, "networks": nets})  # fmt: skip
    per_run = {r.root.name: json.loads(r.metrics.read_text()).get("final", {}) for r in runs}
    history = json.loads(runs[-1].metrics.read_text()).get("history", [])
    atomic_write_json(run.metrics, {"scheme": recipe.scheme.name, "runs": per_run, "final": per_run[runs[-1].root.name],
                                    "history": history})  # fmt: skip
