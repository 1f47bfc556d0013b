"""``edgekd bench`` off a terminal (the accuracy display of edgekd/harness/bench.py): plain stderr lines
instead of a transient bar that shows nothing there; ``-q`` prints none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgekd.cli import main


def _bench(tmp_path: Path, *extra: str) -> str:
    from edgekd.graph.sample_models import sample_models

    model = sample_models(["mlp"])["mlp"]
    main(["bench", str(model), "--target", "tflite-micro", "--software", "--samples", "20", "--windows", "2",
          "--window-s", "0.02", "-o", str(tmp_path / "out"), *extra])  # fmt: skip
    return str(tmp_path / "out" / "bench.json")


def test_bench_prints_plain_stage_lines_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_json = _bench(tmp_path)
    out, err = capsys.readouterr()
    assert out.strip() == bench_json  # stdout stays the one path a script reads
    lines = err.splitlines()
    done = [
        m.group(1) for m in map(re.compile(r"^accuracy: samples (\d+)/20 \(\d+\.\d s\)$").match, lines) if m
    ]
    assert done == [str(k) for k in range(2, 21, 2)]
    assert any(line.startswith("performance: ") for line in lines) and "\x1b" not in err
    assert any(line.startswith("device: edgekd software device (m-model-[ic01])") for line in lines)


def test_bench_quiet_prints_no_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bench(tmp_path, "-q")
    err = capsys.readouterr().err
    assert "accuracy: samples" not in err and "(m-model-[" not in err
