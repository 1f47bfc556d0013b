"""The method library on Fashion-MNIST: one teacher, one MCU-sized student, every method side by side.

Rows: the student alone, KD, each feature/relation loss combined with KD, logit L2, an ensemble teacher,
ensemble selection, Born-Again generations 1-3 and their ensembles, DML, ONE and BYOT. Every row is an
ordinary edgekd run (``run_training`` on a recipe, the same path as ``edgekd distill``), so the table
measures what a user gets. Columns: test accuracy mean ± std over the seeds that finished, int8 accuracy
of the seed-0 student on the TFLite Micro interpreter (``export_run(..., target="tflite-micro")``), and
training seconds (mean per seed). Seeds run round-robin (seed 0 of every row first) and the JSON and
``docs/methods.md`` are rewritten after every run, so a partial table is always on disk
(``complete: false``). Runs are cached in ``--runs-dir``: re-running the script resumes.

    EDGEKD_DATA_DIR=/work/shared/datasets python benchmarks/methods_fashion_mnist.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _common import machine, mean_std, train_run  # noqa: E402

STUDENT = {"name": "cnn", "kwargs": {"channels": [16, 32, 64], "depthwise": False}}
TEACHER = {"name": "cnn", "kwargs": {"channels": [32, 64, 128], "depthwise": False, "dropout": 0.1}}
MID = {"name": "cnn", "kwargs": {"channels": [24, 48, 96], "depthwise": False}}
KD = [{"name": "kd", "weight": 0.9, "params": {"temperature": 4.0}}, {"name": "ce", "weight": 0.1}]
PAIR = {"student": "features.2", "teacher": "features.2"}  # 7x7 maps, 64 vs 128 channels


def loss_row(*extra: dict) -> dict:
    return {"losses": KD + list(extra)}


def init_stage(name: str, loss: dict, epochs: int, trainable: str | None = "features") -> dict:
    """An initialisation stage (FitNet hint, activation boundaries, paraphraser) then KD."""
    first = {"name": name, "epochs": 1, "losses": [loss]}
    if trainable:
        first["trainable"] = trainable
    return {"stages": [first, {"name": "kd", "epochs": epochs, "losses": KD}], "init_epochs": 1}


def rows(epochs: int) -> dict[str, dict]:
    """Row name -> recipe fragment (``teacher: false`` for rows that learn without the big teacher).

    Loss weights were set once (not tuned on test accuracy) so that each extra term's gradient norm on the
    student at initialisation is of the order of the KD term's (about 1-2 on a batch of 128), except for
    ``sp`` (300, Tung & Mori use 3000) and ``factor-transfer`` (0.3 with the per-example L1 sum, i.e. about
    Kim et al.'s beta = 1000 on the element mean)."""
    return {
        "student alone": {"method": {"name": "supervised"}, "teacher": False},
        "KD": loss_row(),
        "KD (alpha 0.5, T 2)": {
            "losses": [
                {"name": "kd", "weight": 0.5, "params": {"temperature": 2.0}},
                {"name": "ce", "weight": 0.5},
            ]
        },  # fmt: skip
        "logit L2 (Ba & Caruana)": {
            "losses": [{"name": "output-mse", "weight": 1.0}, {"name": "ce", "weight": 0.1}]
        },
        "FitNet hint (stage) + KD": init_stage("hint", {"name": "hint", **PAIR}, epochs),
        "AT + KD": loss_row(
            {
                "name": "at",
                "weight": 1.0,
                "student": "features.1,features.2",
                "teacher": "features.1,features.2",
            }
        ),  # fmt: skip
        "gradient AT + KD": loss_row({"name": "gradient-at", "weight": 20.0}),
        "factor transfer (stage) + KD": {
            "stages": [
                {
                    "name": "paraphraser",
                    "epochs": 1,
                    "losses": [{"name": "ft-paraphraser", "teacher": "features.2"}],
                },
                {
                    "name": "ft",
                    "epochs": epochs,
                    "losses": KD + [{"name": "factor-transfer", "weight": 0.3, **PAIR}],
                },
            ],
            "init_epochs": 1,
        },  # fmt: skip
        "NST + KD": loss_row({"name": "nst", "weight": 10.0, **PAIR}),
        "MMD linear + KD": loss_row({"name": "mmd", "weight": 10.0, "params": {"kernel": "linear"}, **PAIR}),
        "activation boundaries (stage) + KD": init_stage(
            "ab", {"name": "ab", "student": "features.2.1", "teacher": "features.2.1"}, epochs
        ),
        "sparsity + KD": loss_row(
            {"name": "sparsity", "weight": 5.0, "student": "features.2.1", "teacher": "features.2.1"}
        ),  # fmt: skip
        "FSP + KD": loss_row(
            {
                "name": "fsp",
                "weight": 3.0,
                "student": "features.1,features.2",
                "teacher": "features.1,features.2",
            }
        ),  # fmt: skip
        "RKD distance+angle + KD": loss_row(
            {"name": "rkd-distance", "weight": 2.0, "student": "flatten", "teacher": "flatten"},
            {"name": "rkd-angle", "weight": 4.0, "student": "flatten", "teacher": "flatten"},
        ),  # fmt: skip
        "similarity-preserving + KD": loss_row({"name": "sp", "weight": 300.0, **PAIR}),
        "ensemble teacher (3, mean-probs) + KD": {"ensemble_teacher": True, "losses": KD},
        "ensemble selection + KD": {"ensemble_selection": True, "method": {"name": "kd"}},
        "BAN": {"ban": True},
        "DML (2 peers)": {"method": {"name": "dml", "params": {"peers": 2}}, "teacher": False},
        "ONE (3 branches)": {"method": {"name": "one", "params": {"branches": 3}}, "teacher": False},
        "BYOT": {"method": {"name": "byot"}, "teacher": False},
    }


def base_recipe(args: argparse.Namespace, name: str, seed: int, epochs: int) -> dict:
    data = {"name": args.data, "val_fraction": 0.1}
    if args.train_fraction < 1:
        data["train_fraction"] = args.train_fraction
    return {"name": name, "seed": seed, "data": data, "model": STUDENT,
            "train": {"epochs": epochs, "batch_size": 128, "optimizer": "adam", "lr": 0.003, "schedule": "cosine",
                      "threads": args.threads}}  # fmt: skip


class NotCached(Exception):
    """``--collect``: the run has not finished (in this or another process)."""


COLLECT = {"on": False}


def train(rec: dict, runs: Path, distill: bool) -> tuple[Path, float]:
    """One run (cached: a finished run folder is reused); returns its folder and training seconds."""
    from edgekd.recipe import recipe_from_dict

    if COLLECT["on"] and not (runs / rec["name"] / "metrics.json").exists():
        raise NotCached(rec["name"])
    return train_run(recipe_from_dict(rec), runs, distill=distill)


def test_acc(folder: Path) -> float:
    return 100 * json.loads((folder / "metrics.json").read_text())["final"]["test_accuracy"]


def int8_acc(folder: Path) -> tuple[float | None, float | None, int | None]:
    """int8 accuracy of the run's student on the TFLite Micro interpreter and the float accuracy on the same
    test images (``export_run`` evaluates the first ``eval_samples`` of the test split); exported once."""
    from edgekd.export import export_run

    info = folder / "export" / "tflite-micro" / "export.json"
    if not info.exists() and COLLECT["on"]:
        return None, None, None
    if not info.exists():
        export_run(folder, target="tflite-micro")
    c = json.loads(info.read_text())["checks"]

    def pct(key: str) -> float | None:
        return round(100 * c[key], 2) if c.get(key) is not None else None

    return pct("int8_accuracy"), pct("float_accuracy"), c.get("tflm_samples") or c.get("eval_samples")


def teacher_run(args: argparse.Namespace, runs: Path, name: str, model: dict, epochs: int) -> Path:
    rec = base_recipe(args, name, 0, epochs)
    rec["model"] = model
    if name == "teacher":
        rec["data"].pop("train_fraction", None)  # the teacher sees the full training split
        rec["train"]["lr"] = 0.002
    return train(rec, runs, distill=False)[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits, 1 epoch, 1 seed: a smoke test")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="start at this seed (a second process)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--train-fraction", type=float, default=0.2, help="stratified part of the training split")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--rows", nargs="*", help="only these rows")
    ap.add_argument(
        "--collect",
        action="store_true",
        help="only gather finished runs (e.g. from several processes) into the JSON and docs",
    )
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "methods-bench"))
    ap.add_argument("--out", default=str(HERE / "results" / "methods_fashion_mnist.json"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "methods.md"))
    args = ap.parse_args(argv)
    os.environ.setdefault("EDGEKD_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    os.environ.setdefault("EDGEKD_THREADS", str(args.threads))
    if args.quick:
        args.data, args.seeds, args.epochs, args.teacher_epochs, args.train_fraction = "digits", 1, 1, 2, 1.0
        args.runs_dir = str(Path(args.runs_dir).with_name("methods-bench-quick"))
        args.out = str(Path(args.runs_dir) / "methods_quick.json")  # never over the committed results
        args.docs = str(Path(args.runs_dir) / "methods_quick.md")
    import torch

    COLLECT["on"] = args.collect
    torch.set_num_threads(args.threads)
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    table = rows(args.epochs)
    if args.rows:
        table = {k: v for k, v in table.items() if k in args.rows or (k == "BAN" and "BAN" in args.rows)}
    results: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {
        "benchmark": "method library on Fashion-MNIST (issue 11)",
        "complete": False,
        "quick": args.quick,
        "machine": machine(),
        "teacher": None,
        "student": {**STUDENT, "params": None},
        "settings": {
            "epochs": args.epochs,
            "train_fraction": args.train_fraction,
            "batch_size": 128,
            "optimizer": "adam lr 0.003 cosine",
            "seeds_asked": args.seeds,
            "threads": args.threads,
        },  # fmt: skip
        "shortened": (
            f"CPU budget (2 shared cores, ~1 h): the teacher trains {args.teacher_epochs} epochs on the full split "
            f"(the issue asks >= 93% test accuracy; this one is below); every student trains {args.epochs} epochs on "
            f"a stratified {args.train_fraction:.0%} of the training split (init stages of FitNet, activation "
            "boundaries and factor transfer add 1 epoch); seeds run round-robin and each row reports the seeds that "
            "finished; int8 accuracy is measured for seed 0 only; ensemble-selection library: teacher, two mid-size "
            "CNNs and the seed-0 'student alone' and 'KD' students"
        ),
        "rows": [],
    }
    from edgekd.models import build_model

    kw = {
        "input_shape": [1, 28, 28] if args.data != "digits" else [1, 8, 8],
        "num_classes": 10,
        **STUDENT["kwargs"],
    }
    report["student"]["params"] = sum(p.numel() for p in build_model("cnn", **kw).parameters())

    def emit() -> None:
        out = []
        for name, r in results.items():
            m, s = mean_std(r["accs"])
            out.append({"method": name, "acc_mean": round(m, 2), "acc_std": round(s, 2), "seeds": r["seeds"],
                        "per_seed": [round(a, 2) for a in r["accs"]], "int8_acc": r.get("int8"), "float_acc_same_images": r.get("float_same"),
                        "int8_samples": r.get("int8_samples"),
                        "seconds": round(sum(r["secs"]) / len(r["secs"]), 1), "note": r.get("note", "")})  # fmt: skip
        kd = next((r for r in out if r["method"] == "KD"), None)
        for r in out:
            r["vs_kd"] = round(r["acc_mean"] - kd["acc_mean"], 2) if kd else None
        report["rows"] = out
        report["wall_s"] = None if COLLECT["on"] else round(time.perf_counter() - t_start, 1)
        if COLLECT["on"]:
            report["collected"] = ("--collect: the table gathers finished runs from --runs-dir, trained by several "
                                   "processes of this script (--rows / --first-seed); see train_seconds_all_runs")  # fmt: skip
        # training time of every run (BAN generations are cumulative: count the chain once)
        report["train_seconds_all_runs"] = round(sum(sum(r["secs"]) for n, r in results.items()
                                                     if not n.startswith("BAN") or n == "BAN gen 3"), 1)  # fmt: skip
        from edgekd.atomic import atomic_write_json, atomic_write_text

        atomic_write_json(Path(args.out), report)
        atomic_write_text(Path(args.docs), into_docs(Path(args.docs), render_markdown(report)))

    def record(name: str, seed: int, folder: Path | None, acc: float, secs: float, note: str = "") -> None:
        r = results.setdefault(name, {"accs": [], "secs": [], "seeds": []})
        r["accs"].append(acc)
        r["secs"].append(secs)
        r["seeds"].append(seed)
        if note:
            r["note"] = note
        if seed == 0 and folder is not None and not args.no_int8:
            try:
                r["int8"], r["float_same"], r["int8_samples"] = int8_acc(folder)
            except Exception as e:  # an export failure is a result too
                r["int8"], r["note"] = None, f"export failed: {str(e).splitlines()[0][:200]}"
        print(f"{name:>40} seed={seed} acc={acc:.2f} ({secs:.0f}s)", flush=True)
        emit()

    extras: dict[str, Path] = {}

    def get_teacher() -> Path:
        """Trained (or reused) only when a row needs it, so teacher-free rows can start at once."""
        if "teacher" not in extras:
            extras["teacher"] = t = teacher_run(args, runs, "teacher", TEACHER, args.teacher_epochs)
            report["teacher"] = {**TEACHER, "path": str(t.relative_to(ROOT)) if t.is_relative_to(ROOT) else str(t),
                                 "test_acc": round(test_acc(t), 2), "epochs": args.teacher_epochs,
                                 "train": "full training split (54k)",
                                 "recipe": "examples/teacher_fashion_mnist.yaml with train.epochs=8 (same model and settings)"}  # fmt: skip
        return extras["teacher"]

    for seed in range(args.first_seed, args.seeds):
        for name, spec in table.items():
            spec = dict(spec)
            needs_teacher = spec.get("teacher", True) is not False and "ban" not in spec
            teacher = get_teacher() if needs_teacher else None
            tag = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
            rec = base_recipe(args, f"{tag}-s{seed}", seed, args.epochs)
            try:
                if spec.pop("ban", False):
                    ban_rows(args, runs, rec, seed, record)
                    continue
                if spec.pop("ensemble_teacher", False):
                    for k, model in (("mid-a", MID), ("mid-b", MID)):
                        extras[k] = teacher_run(args, runs, k, {**model, "kwargs": {**model["kwargs"]}}, args.epochs) if k not in extras else extras[k]  # fmt: skip
                    rec["teacher"] = {"paths": [str(teacher), str(extras["mid-a"]), str(extras["mid-b"])],
                                      "combine": "mean-probs"}  # fmt: skip
                elif spec.pop("ensemble_selection", False):
                    lib = [str(teacher), str(extras.get("mid-a", teacher)), str(extras.get("mid-b", teacher)),
                           str(runs / "student-alone-s0"), str(runs / "kd-s0")]  # fmt: skip
                    rec["scheme"] = {
                        "name": "ensemble-selection",
                        "params": {"library": lib, "size": 10, "init": 1},
                    }
                uses_teacher = spec.pop("teacher", True) is not False
                init_epochs = spec.pop("init_epochs", 0)
                rec.update(spec)
                if uses_teacher and "teacher" not in rec and "scheme" not in rec:
                    rec["teacher"] = {"path": str(teacher)}
                folder, secs = train(rec, runs, distill=uses_teacher and "scheme" not in rec)
                note = f"+{init_epochs} init epoch" if init_epochs else ""
                if "scheme" in rec:
                    sel = json.loads((folder / "selection.json").read_text())
                    note = f"chosen ensemble val {100 * sel['ensemble_val_accuracy']:.2f}%, test {100 * sel['ensemble_test_accuracy']:.2f}%; weights {list(sel['weights'].values())}"
                if name.startswith("ensemble teacher"):
                    note = "teacher + 2 mid CNNs (24/48/96, trained on the same subset)"
                record(name, seed, folder, test_acc(folder), secs, note)
            except NotCached:
                continue
            except Exception as e:  # keep going: a failed row is reported, not fatal
                print(f"{name} seed={seed} FAILED: {type(e).__name__}: {e}", flush=True)
                results.setdefault(name, {"accs": [], "secs": [], "seeds": []})["note"] = (
                    f"failed: {str(e)[:200]}"
                )
    expected = sum(5 if name == "BAN" else 1 for name in table)
    report["complete"] = len(results) == expected and all(
        len(r["seeds"]) == args.seeds for r in results.values()
    )
    emit()


def ban_rows(args, runs: Path, rec: dict, seed: int, record) -> None:
    """BAN: generation 1 from labels, generations 2-3 from the previous one (KD, alpha 1), and ensembles."""
    rec = {**rec, "name": f"ban-s{seed}", "method": {"name": "kd", "params": {"alpha": 1.0}},
           "scheme": {"name": "born-again-ensemble", "params": {"generations": 3}}}  # fmt: skip
    folder, secs = train(rec, runs, distill=False)
    info = json.loads((folder / "ensemble.json").read_text())["generations"]
    total = 0.0
    for g in info:
        k = g["generation"]
        gen = folder / f"gen-{k}"
        gsecs = sum(h["seconds"] for h in json.loads((gen / "metrics.json").read_text())["history"])
        total += gsecs
        record(f"BAN gen {k}", seed, gen, 100 * g["test_accuracy"], total,
               "gen 1 learns from labels" if k == 1 else f"BAN (KD alpha 1) from gen {k - 1}")  # fmt: skip
        if k > 1:
            record(f"BAN ensemble gens 1-{k}", seed, None, 100 * g[f"ensemble_1_{k}_test_accuracy"], total,
                   "mean of probabilities; not one MCU student (no int8)")  # fmt: skip


BEGIN, END = (
    "<!-- benchmark table: generated by benchmarks/methods_fashion_mnist.py -->",
    "<!-- end of table -->",
)


def into_docs(path: Path, table: str) -> str:
    """Replace the generated section of ``path`` (between the markers), keeping the hand-written guide."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1]
    return text + "\n" + BEGIN + "\n" + table + "\n" + END + "\n"


def render_markdown(report: dict) -> str:
    t = report["teacher"] or {"kwargs": TEACHER["kwargs"], "test_acc": float("nan"), "epochs": "?"}
    s = report["student"]
    lines = [
        "## Measured on Fashion-MNIST",
        "",
        "Generated by `benchmarks/methods_fashion_mnist.py` from `benchmarks/results/methods_fashion_mnist.json`"
        + (" (**partial: the run is still going or was cut short**)." if not report["complete"] else "."),
        "",
        f"Teacher: `cnn` {t['kwargs']['channels']} plain conv, {t['test_acc']}% test accuracy "
        f"({t['epochs']} epochs, full training split). Student: `cnn` {s['kwargs']['channels']} plain conv, "
        f"{s['params']:,} parameters (int8 on TFLite Micro). Settings: {report['settings']}.",
        "",
        f"Shortened: {report['shortened']}.",
        "",
        "| method | test acc % (mean ± std) | seeds | vs KD | int8 / float acc %, seed 0 (TFLite Micro, first 1000 test images) | seconds / seed | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        vs = "" if r["vs_kd"] is None or r["method"] == "KD" else f"{r['vs_kd']:+.2f}"
        i8 = "" if r["int8_acc"] is None else f"{r['int8_acc']:.1f} / {r['float_acc_same_images']:.1f}"
        lines.append(f"| {r['method']} | {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {len(r['seeds'])} | {vs} | {i8} | "
                     f"{r['seconds']:.0f} | {r['note']} |")  # fmt: skip
    lines += [
        "",
        f"Training time of all runs: {report.get('train_seconds_all_runs', 0) / 60:.1f} min on "
        f"{report['machine']['cores']} shared cores (runs of two processes overlapped; the load varied).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
