"""`edgekd run` (edgekd/pipeline.py) on digits and on an autoencoder, and the end-of-run headline.

Teacher -> baseline -> distill -> export (tflite-micro) -> profile; the headline: int8 accuracy on TFLite
Micro next to the teacher's, flash, RAM, estimated latency and fit per board, and where the report is
(read from export.json and report.json).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from edgekd.cli import main
from edgekd.pipeline import headline, print_summary


@pytest.mark.slow
def test_run_recipe_end_to_end(tmp_path, capsys):
    recipe = {
        "name": "e2e",
        "data": {"name": "digits"},
        "teacher": {
            "model": {"name": "cnn", "kwargs": {"channels": [16, 32], "depthwise": False}},
            "train": {"epochs": 10},
        },
        "baseline": True,
        "model": {"name": "cnn", "kwargs": {"channels": [8, 16], "depthwise": True}},
        "method": {"name": "kd", "params": {"temperature": 4.0, "alpha": 0.9}},
        "train": {"epochs": 10, "batch_size": 64, "lr": 0.05},
        "export": {"targets": ["tflite-micro"]},
        "profile": {"runs": 5},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "-q"])
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "e2e"
    assert f"report: {run / 'report.html'}" in out.replace("\n", "")
    for f in ("teacher/model.pt", "baseline/model.pt", "student.pt", "teacher.pt", "recipe.yaml", "metrics.json",
              "export/tflite-micro/model_int8.tflite", "export/tflite-micro/model_data.cc", "export/tflite-micro/export.json",
              "report.json", "report.md", "report.html"):  # fmt: skip
        assert (run / f).is_file(), f
    report = json.loads((run / "report.json").read_text())
    text = json.dumps(report)
    # every stage's artifact is profiled on the same test split, the int8 file with its measured arena
    assert "model_int8.tflite" in text and "teacher" in text
    export = json.loads((run / "export/tflite-micro/export.json").read_text())
    checks = export["checks"]
    assert checks["float_accuracy"] > 0.6 and checks["int8_top1_agreement"] > 0.9
    assert export["micro"]["arena"]["tflm"]["head"] > 0


def test_run_resume_starts_a_first_run_and_reuses_it_the_second_time(tmp_path, run_cli):
    """`make demo` is `edgekd run --resume`: the first call (no run folder yet) trains, the second reuses."""
    recipe = {"name": "first", "data": {"name": "digits"}, "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
              "train": {"epochs": 1, "batch_size": 64, "lr": 0.05}}  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    args = ["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--resume", "--skip-export", "-q"]
    code, err = run_cli(args)
    model = tmp_path / "runs" / "first" / "model.pt"
    assert code == 0 and model.exists(), err
    written = model.stat().st_mtime_ns
    code, err = run_cli(args)
    assert code == 0 and model.stat().st_mtime_ns == written, err


@pytest.mark.slow
def test_an_autoencoder_runs_end_to_end_train_export_profile(tmp_path, run_cli):
    """Synthetic windows (N, 8, 4) on a low-dimensional subspace, anomalies off it: teacher, distilled
    fc-ae student, tflite-micro export with reconstruction checks, and the profile report."""
    rng = np.random.default_rng(1)
    basis = rng.standard_normal((2, 32))
    x = (rng.standard_normal((400, 2)) @ basis).reshape(400, 8, 4).astype(np.float32)
    xt = (rng.standard_normal((120, 2)) @ basis).reshape(120, 8, 4).astype(np.float32)
    yt = np.zeros(120, np.int64)
    xt[:30] += 2.0 * rng.standard_normal((30, 8, 4)).astype(np.float32)
    yt[:30] = 1
    np.savez(tmp_path / "w.npz", x=x, x_test=xt, y_test=yt, task=np.array("reconstruction"))
    recipe = {
        "name": "ae", "data": {"name": "npz", "options": {"path": str(tmp_path / "w.npz")}},
        "model": {"name": "fc-ae", "kwargs": {"hidden": [16], "latent": 4}},
        "teacher": {"model": {"name": "fc-ae", "kwargs": {"hidden": [64], "latent": 4}}},
        "losses": [{"name": "recon-mse", "weight": 0.5}, {"name": "output-mse", "weight": 0.5}],
        "train": {"epochs": 12, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
        "export": {"targets": ["tflite-micro"]}, "profile": {"runs": 2},
    }  # fmt: skip
    p = tmp_path / "ae.yaml"
    p.write_text(yaml.safe_dump(recipe))
    code, err = run_cli(["run", str(p), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert code == 0, err
    run = tmp_path / "runs" / "ae"
    assert json.loads((run / "data.json").read_text())["task"] == "reconstruction"
    assert json.loads((run / "metrics.json").read_text())["final"]["test_auc"] > 0.8
    exported = json.loads((run / "export" / "tflite-micro" / "export.json").read_text())
    checks, ranges = exported["checks"], exported["calibration"]["ranges"]
    assert checks["int8_score_spearman"] > 0.8 and checks["int8_sqnr_db"] > 10
    assert checks["float_auc"] > 0.8 and abs(checks["int8_auc"] - checks["float_auc"]) < 0.05
    assert ranges["held_out"]["metric"] == "score_spearman"  # autoencoders choose ranges on validation too
    assert ranges["chosen"] in {c["method"] for c in ranges["candidates"]} and len(ranges["candidates"]) == 3
    assert "int8_top1_agreement" not in checks  # argmax over reconstructed values means nothing
    report = json.loads((run / "report.json").read_text())
    assert report["artifacts"] and (run / "report.html").exists()


def _export(folder: Path, acc: float, arena: int, flash: int, fits: bool | None) -> str:
    folder.mkdir(parents=True)
    rec = {"checks": {"int8_accuracy": acc, "int8_runtime": "tflite-micro"},
           "micro": {"arena": {"tflm": {"head": arena // 2, "tail": arena // 2, "total": arena}}},
           "tflite": {"int8": {"bytes": flash}}, "fit": {"fits": fits}}  # fmt: skip
    (folder / "export.json").write_text(json.dumps(rec))
    return str(folder)


def test_headline_rows_and_summary(tmp_path: Path) -> None:
    board = _export(tmp_path / "export" / "arduino-nano-33-ble", 0.9499, 4608, 8192, True)
    tiny = _export(tmp_path / "export" / "tiny-board", 0.9499, 4608, 8192, False)
    report = {"artifacts": [{"runtime": "tflm", "path": f"{board}/model_int8.tflite",
                             "mcu_estimate": {"arduino-nano-33-ble": {"latency_ms": 0.3}}}]}  # fmt: skip
    (tmp_path / "report.json").write_text(json.dumps(report))
    summary = {"run": str(tmp_path), "teacher_accuracy": 0.9861, "baseline_accuracy": 0.9359,
               "student_accuracy": 0.9499, "exports": {"arduino-nano-33-ble": board, "tiny-board": tiny},
               "report": str(tmp_path / "report.html")}  # fmt: skip
    rows = headline(summary)
    assert rows[0] == ["arduino-nano-33-ble", "94.99% TFLM", "8.0 KiB", "4.5 KiB", "~0.30 ms", "fits"]
    assert rows[1][-2:] == ["-", "DOES NOT FIT"]
    buf = io.StringIO()
    print_summary(summary, Console(file=buf, width=80))
    text = buf.getvalue()
    assert "float teacher 98.61%" in text and "student, labels only" in text
    assert f"report: {tmp_path / 'report.html'}" in text.replace("\n", "")
    assert max(len(line) for line in text.splitlines()) <= 80
