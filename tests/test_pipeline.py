"""`edgekd run`: teacher -> baseline -> distill -> export (tflite-micro) -> profile, on digits."""

import json

import yaml

from edgekd.cli import main


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
