"""The end-of-run headline: int8 accuracy on TFLite Micro next to the teacher's, flash, RAM, estimated
latency and fit per board, and where the report is (read from export.json and report.json)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from edgekd.pipeline import headline, print_summary


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
