"""Does int8 keep the float accuracy? The int8-fidelity benchmark (issue 27), on TFLite Micro.

For every student of ``examples/`` that ships to a microcontroller (the digits and MNIST demos, the SMD
anomaly-detection autoencoders: fc and conv1d, judged by the ROC AUC of their anomaly scores) and every
student size of the KD-gain benchmark (``benchmarks/kd_gain.py``: 2k, 10k and 50k parameters on digits,
MNIST and Fashion-MNIST, the DIST-distilled seed-0 student of that benchmark) the rows are, all int8 on
the host TFLite Micro interpreter, judged on the whole test split:

* ``float``: the PyTorch student (the reference of every gap);
* ``ptq``: post-training quantization as before, the converter's min/max ranges (``--ranges minmax``);
* ``ptq-chosen``: min/max, percentile or MSE-optimal ranges, chosen by the int8 accuracy on the
  validation split (``--ranges auto``);
* ``qat-kd``: a quantization-aware fine-tune of the float student (``model.init``, ``train.qat``) with
  the student's own distillation losses from the same teacher and cached views, exported with its learned
  ranges (``--ranges learned``); its learning rate (a factor of the student's, :data:`QAT_LR_FACTORS`)
  chosen on seed 0 by the fake-quantized validation accuracy (ties: the lower validation loss), then 3
  seeds.

Every step is one JSON under ``benchmarks/results/int8_fidelity/<student>/``; a later session continues
(``--budget-minutes`` stops starting steps after that time). ``--phase summary`` writes
``benchmarks/results/int8_fidelity.json`` (the table, the goals, what is pending) and the per-layer report
of the student that loses most under plain PTQ to ``docs/int8_layers.md``.

    python benchmarks/int8_fidelity.py --budget-minutes 120       # run what is missing, then summarise
    python benchmarks/int8_fidelity.py --students digits-2k demo  # some students only
    python benchmarks/int8_fidelity.py --phase summary
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import kd_gain  # noqa: E402
from benchmarks._common import (  # noqa: E402
    REPO,
    RESULTS,
    RunStore,
    machine,
    mean_std,
    print_table,
    train_run,
    write_results,
)

OUT = RESULTS / "int8_fidelity"
RUNS = REPO / "runs" / "bench" / "int8_fidelity"
DOCS = REPO / "docs"
QAT_SEEDS = (0, 1, 2)
TFLM_SAMPLES = 10_000  # the whole test split of MNIST / Fashion-MNIST
# The QAT+KD fine-tune: a tenth of the student's learning rate, cosine to 0; the first half of the epochs
# observes the activation ranges, the second trains with them fixed and batch norm frozen.
QAT_EPOCHS = {"digits": 10, "mnist": 3, "fashion-mnist": 3, "smd": 3}
# tried on seed 0, chosen on the validation split (fake-quantized accuracy)
QAT_LR_FACTORS = (0.1, 0.01, 0.001)
KD_ROW = "dist"  # the KD-gain row whose students are measured (DIST, Huang et al. 2022)


def students() -> dict[str, dict[str, Any]]:
    """``{name: {data, recipe (dict), runs folder}}``, cheapest first."""
    from edgekd.recipe import load_recipe

    out: dict[str, dict[str, Any]] = {}

    def example(file: str) -> dict[str, Any]:
        r = load_recipe(REPO / "examples" / file).to_dict()
        for key in ("baseline", "export", "profile"):
            r.pop(key, None)
        return r

    # the SMD students learn from the noisy-sequential ensemble, which learns from the LSTM autoencoder
    smd_chain = [example("smd_lstm_ae.yaml"), example("smd_noisy_sequential.yaml")]
    for name, file in (("demo", "demo.yaml"), ("demo-mnist", "demo_mnist.yaml"), ("smd-mcu-fc", "smd_mcu_fc.yaml"),
                       ("smd-mcu-conv1d", "smd_mcu_conv1d.yaml")):  # fmt: skip
        r = example(file)
        out[name] = {"data": r["data"]["name"], "recipe": r, "runs": RUNS / "examples", "source": f"examples/{file}",
                     "before": smd_chain if r["data"]["name"] == "smd" else []}  # fmt: skip
    for data in ("digits", "mnist", "fashion-mnist"):
        chosen = kd_gain.choose(data, kd_gain.load_all(data))
        if chosen is None:
            continue
        for size in kd_gain.SIZES:
            r = kd_gain.recipe_dict(data, size, KD_ROW, chosen[KD_ROW], 0)
            out[f"{data}-{size}"] = {"data": data, "recipe": r, "runs": kd_gain.RUNS / data, "before": [],
                                     "source": f"benchmarks/kd_gain.py {size} {KD_ROW} seed 0"}  # fmt: skip
    order = ["digits-2k", "digits-10k", "digits-50k", "demo", "mnist-2k", "demo-mnist", "fashion-mnist-2k",
             "smd-mcu-fc", "smd-mcu-conv1d", "mnist-10k", "fashion-mnist-10k", "mnist-50k", "fashion-mnist-50k"]  # fmt: skip
    return {k: out[k] for k in order if k in out}


def qat_recipe(float_recipe: dict[str, Any], float_folder: Path, data: str, lr_factor: float,
               seed: int) -> dict[str, Any]:  # fmt: skip
    r = json.loads(json.dumps(float_recipe))
    r["name"] = f"{r['name']}-qat-lr{lr_factor:g}-s{seed}"
    r["seed"] = seed
    r["model"]["init"] = (
        str(float_folder.relative_to(REPO)) if float_folder.is_relative_to(REPO) else str(float_folder)
    )
    r.pop("stages", None)
    epochs = QAT_EPOCHS[data]
    views = min(int(r["train"].get("teacher_views", 0)), epochs)  # one cached view per example and epoch
    r["train"].update(epochs=epochs, lr=r["train"].get("lr", 0.05) * lr_factor, qat=True, schedule="cosine",
                      warmup_epochs=0, teacher_views=views)  # fmt: skip
    return r


def _train(recipe: dict[str, Any], runs: Path) -> tuple[Path, float]:
    from edgekd.recipe import recipe_from_dict

    r = recipe_from_dict(recipe, recipe["name"])
    return train_run(r, runs, distill=r.teacher is not None and bool(r.teacher.path or r.teacher.paths))


def _export(folder: Path, ranges: str, name: str) -> dict[str, Any]:
    from edgekd.export import export_run

    out = folder / "export" / name
    export_run(
        str(folder), target="tflite-micro", ranges=ranges, tflm_samples=TFLM_SAMPLES, out=out, quiet=True
    )
    rec = json.loads((out / "export.json").read_text())
    c = rec["checks"]
    metric = "auc" if rec["task"]["task"] == "reconstruction" else "accuracy"  # AUC of the anomaly scores
    return {"ranges": rec.get("calibration", {}).get("ranges"), "eval_samples": c["eval_samples"],
            "metric": metric, "float_score": c.get(f"float_{metric}"), "int8_score": c.get(f"int8_{metric}"),
            "float_accuracy": c.get("float_accuracy"), "int8_accuracy": c.get("int8_accuracy"),
            "int8_score_spearman": c.get("int8_score_spearman"),
            "int8_top1_agreement": c.get("int8_top1_agreement"), "runtime": c["int8_runtime"],
            "flash_bytes": rec["tflite"]["int8"]["bytes"], "arena_bytes": rec["micro"]["arena"]["tflm"]["total"],
            "wall_seconds": rec["wall_time_s"]}  # fmt: skip


def float_folder(spec: dict[str, Any]) -> Path:
    for teacher in spec["before"]:  # the student's teachers, trained once
        _train(teacher, spec["runs"])
    folder, _ = _train(spec["recipe"], spec["runs"])
    return folder


def measure_ptq(spec: dict[str, Any], ranges: str) -> dict[str, Any]:
    from edgekd.models import load_model
    from edgekd.runfolder import RunFolder

    folder = float_folder(spec)
    metrics = json.loads((folder / "metrics.json").read_text())
    params = sum(p.numel() for p in load_model(RunFolder(folder).trained_model())[0].parameters())
    return {"row": "ptq" if ranges == "minmax" else "ptq-chosen", "folder": str(folder.relative_to(REPO)),
            "test_accuracy": metrics["final"].get("test_accuracy"), "params": params,
            **_export(folder, ranges, f"int8-fidelity-{ranges}"), "machine": machine()}  # fmt: skip


def measure_qat(spec: dict[str, Any], lr_factor: float, seed: int) -> dict[str, Any]:
    base = float_folder(spec)
    recipe = qat_recipe(spec["recipe"], base, spec["data"], lr_factor, seed)
    folder, seconds = _train(recipe, RUNS / spec["data"])
    metrics = json.loads((folder / "metrics.json").read_text())
    history = metrics.get("history", [])
    rec = _export(folder, "learned", "int8-fidelity-learned")
    return {"row": "qat-kd", "seed": seed, "lr_factor": lr_factor, "recipe": recipe, "train_seconds": round(seconds, 2),
            "fake_quant_val_accuracy": history[-1].get("val_accuracy") if history else None,
            "fake_quant_val_loss": history[-1].get("val_loss") if history else None,
            "qat_float_test_accuracy": metrics["final"].get("test_accuracy"), **rec,
            "machine": machine()}  # fmt: skip


def qat_key(lr_factor: float, seed: int) -> str:
    return f"qat-lr{lr_factor:g}-s{seed}"


def chosen_lr(st: RunStore) -> float | None:
    """The QAT learning-rate factor with the best seed-0 validation accuracy (None: sweep not finished)."""
    sweep = [st.get(qat_key(f, 0)) for f in QAT_LR_FACTORS]
    if any(r is None for r in sweep):
        return None
    best = max(sweep, key=lambda r: (r["fake_quant_val_accuracy"] or 0.0, -(r["fake_quant_val_loss"] or 0.0)))
    return float(best["lr_factor"])


def steps(spec: dict[str, Any], st: RunStore) -> list[tuple[str, Any]]:
    """The steps of one student in order; the seeds after the sweep once the sweep has chosen."""
    out = [("ptq", lambda: measure_ptq(spec, "minmax")), ("ptq-chosen", lambda: measure_ptq(spec, "auto")),
           *((qat_key(f, 0), lambda f=f: measure_qat(spec, f, 0)) for f in QAT_LR_FACTORS)]  # fmt: skip
    lr = chosen_lr(st)
    if lr is not None:
        out += [(qat_key(lr, s), lambda s=s: measure_qat(spec, lr, s)) for s in QAT_SEEDS if s != 0]
    return out


def run(names: list[str] | None, minutes: float | None) -> None:
    t0 = time.monotonic()
    for name, spec in students().items():
        if names and name not in names:
            continue
        st = RunStore(OUT / name)
        while todo := [(k, fn) for k, fn in steps(spec, st) if k not in st]:
            key, fn = todo[0]
            if minutes is not None and time.monotonic() - t0 > 60 * minutes:
                print(f"budget of {minutes} minutes spent; stopping before {name} {key}", flush=True)
                return
            try:
                rec = st.put(key, {"student": name, "source": spec["source"], **fn()})
            except Exception as e:  # one student's failure is reported; the others still run
                print(f"{name} {key}: FAILED {type(e).__name__}: {e}", flush=True)
                break
            print(f"{name} {key}: int8 {100 * score(rec, 'int8'):.2f} (float {100 * score(rec, 'float'):.2f})",
                  flush=True)  # fmt: skip


def score(rec: dict[str, Any], which: str) -> float:
    """The judged figure of a step (``which``: float or int8): test accuracy, or the anomaly AUC."""
    return rec.get(f"{which}_score", rec.get(f"{which}_accuracy"))


def student_row(name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    st = RunStore(OUT / name)
    recs = {key: st.get(key) for key, _ in steps(spec, st)}
    pending = [f"{name} {k}" for k, v in recs.items() if v is None]
    lr = chosen_lr(st)
    if lr is None:
        pending.append(f"{name} QAT seeds 1-2 (after the learning-rate sweep)")
    row: dict[str, Any] = {"student": name, "source": spec["source"]}
    ptq, chosen = recs["ptq"], recs["ptq-chosen"]
    if ptq:
        row.update(params=ptq.get("params"), eval_samples=ptq["eval_samples"], float=score(ptq, "float"),
                   metric=ptq.get("metric", "accuracy"), ptq=score(ptq, "int8"), flash_bytes=ptq["flash_bytes"], arena_bytes=ptq["arena_bytes"])  # fmt: skip
    if chosen:
        row.update(ptq_chosen=score(chosen, "int8"), chosen_ranges=(chosen["ranges"] or {}).get("chosen"))
    qats = [r for k, r in recs.items() if r and lr is not None and k.startswith(f"qat-lr{lr:g}-")]
    if lr is not None:
        row["qat_lr_factor"] = lr
    if qats:
        m, s = mean_std([score(r, "int8") for r in qats])
        row.update(qat_kd=[m, s], qat_kd_seeds=len(qats), qat_float=mean_std([score(r, "float") for r in qats]),
                   qat_train_seconds=mean_std([r["train_seconds"] for r in qats])[0])  # fmt: skip
    if ptq and chosen and qats:
        best = max(row["ptq_chosen"], row["qat_kd"][0])
        row["best_int8"] = "qat-kd" if row["qat_kd"][0] >= row["ptq_chosen"] else "ptq-chosen"
        row["loss_points"] = round(100 * (row["float"] - best), 3)
        row["within_half_point"] = row["loss_points"] <= 0.5
        row["qat_at_or_above_ptq"] = row["qat_kd"][0] >= max(row["ptq"], row["ptq_chosen"])
    return row, pending


def summarise() -> dict[str, Any]:
    rows, pending = [], []
    for name, spec in students().items():
        row, missing = student_row(name, spec)
        rows.append(row)
        pending += missing
    done = [r for r in rows if "within_half_point" in r]
    summary = {
        "benchmark": "int8_fidelity", "runtime": "TFLite Micro (host interpreter, tflite-micro)",
        "qat": {"epochs": QAT_EPOCHS, "lr_factors": list(QAT_LR_FACTORS), "seeds": list(QAT_SEEDS),
                "ranges": "EMA of batch min/max for the first half of the epochs, then fixed; batch norm frozen",
                "losses": "the student's own recipe (its distillation losses and cached teacher views)",
                "settings_choice": "lr factor on seed 0 by fake-quantized validation accuracy (ties: validation loss)"},
        "rows": rows,
        "goals": {"every_student_within_0.5_points": all(r["within_half_point"] for r in done) if done else None,
                  "qat_kd_at_or_above_ptq_everywhere": all(r["qat_at_or_above_ptq"] for r in done) if done else None,
                  "students_measured": len(done), "students": len(rows)},
        "complete": not pending, "pending": pending, "machine": machine(),
    }  # fmt: skip
    return summary


def layer_report(summary: dict[str, Any]) -> None:
    """The per-layer float-vs-int8 diff of the student that loses most under plain PTQ, in ``docs/``."""
    from edgekd.data.evalset import data_from_info, read_data_info
    from edgekd.profile.layers import layer_report as report
    from edgekd.profile.report.markdown import _md_table
    from edgekd.profile.report.tables import LAYER_HEADERS, LAYER_NOTE, layer_sections

    worst = max((r for r in summary["rows"] if "ptq" in r), key=lambda r: r["float"] - r["ptq"], default=None)
    if worst is None:
        return
    folder = REPO / RunStore(OUT / worst["student"]).get("ptq")["folder"]
    layers = report(
        folder / "export" / "int8-fidelity-minmax", data_from_info(read_data_info(folder / "data.json"))
    )
    summary["layer_report"] = {
        "student": worst["student"],
        "file": "docs/int8_layers.md",
        "summary": layers["summary"],
    }
    [(_, line, rows)] = layer_sections({"layers": [layers]})
    text = [f"# Per-layer int8 diff: {worst['student']}", "",
            f"The student of `benchmarks/int8_fidelity.py` that loses most under plain PTQ (min/max ranges): "
            f"float {100 * worst['float']:.2f}%, int8 {100 * worst['ptq']:.2f}% on TFLite Micro "
            f"({worst['eval_samples']} test samples). Written by `benchmarks/int8_fidelity.py --phase summary`.",
            "", line, "", _md_table(LAYER_HEADERS, rows), "", LAYER_NOTE]  # fmt: skip
    DOCS.mkdir(exist_ok=True)
    (DOCS / "int8_layers.md").write_text("\n".join(text) + "\n")


def print_summary(summary: dict[str, Any]) -> None:
    def pct(v: Any) -> str:
        if isinstance(v, list):
            return f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}"
        return "-" if v is None else f"{100 * v:.2f}"

    cols = ["student", "float", "PTQ min/max", "PTQ chosen", "QAT+KD (3 seeds)", "loss", "≤0.5"]
    rows = [[r["student"], pct(r.get("float")), pct(r.get("ptq")),
             f"{pct(r.get('ptq_chosen'))} {r.get('chosen_ranges') or ''}", pct(r.get("qat_kd")),
             r.get("loss_points", "-"), r.get("within_half_point", "-")] for r in summary["rows"]]  # fmt: skip
    print_table("int8 on TFLite Micro (test accuracy, %)", cols, rows)
    print(json.dumps(summary["goals"]), f"pending: {len(summary['pending'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", nargs="+", default=["run", "summary"], choices=["run", "summary"])
    ap.add_argument("--students", nargs="*", help="only these (names as in the summary)")
    ap.add_argument("--budget-minutes", type=float, default=None)
    args = ap.parse_args()
    if "run" in args.phase:
        run(args.students, args.budget_minutes)
    if "summary" in args.phase:
        summary = summarise()
        layer_report(summary)
        write_results("int8_fidelity", summary)
        print_summary(summary)


if __name__ == "__main__":
    main()
