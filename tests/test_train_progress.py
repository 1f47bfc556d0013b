"""Training progress (edgekd/distill/train/progress.py, edgekd/console.py): the rich bar on a terminal, one
flushed line per epoch when stdout is a pipe or a file, nothing when progress is off."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.console import count_lines, is_terminal
from edgekd.data import ArrayDataset
from edgekd.distill.methods.base import Distiller
from edgekd.distill.train import Stage, Trainer
from edgekd.distill.train import progress as progress_mod
from edgekd.recipe import recipe_from_dict
from edgekd.runfolder import RunFolder

LINE = re.compile(r"^(.+) epoch (\d+)/(\d+)  loss \d+\.\d{4}  val_acc \d+\.\d\d%  \d+\.\d s$")


class _Linear(Distiller):
    """A linear classifier trained on cross-entropy alone."""

    needs_teacher = False

    def __init__(self) -> None:
        super().__init__(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)))

    def forward_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.student(x)
        return z, {"ce": torch.nn.functional.cross_entropy(z, y)}


def _fit(tmp_path: Path, progress: bool, epochs: int = 3) -> None:
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.standard_normal((40, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 40))
    cfg = recipe_from_dict({"train": {"epochs": epochs, "batch_size": 10, "lr": 0.1}}).train
    run = RunFolder(tmp_path).ensure()
    Trainer([Stage("s", _Linear(), cfg)], None, run, progress=progress, label="train tiny").fit(data, data)


def test_one_line_per_epoch_when_stdout_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    _fit(tmp_path, progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert [LINE.match(line).groups()[:3] for line in lines] == [
        ("train tiny", str(k), "3") for k in (1, 2, 3)
    ]


def test_nothing_printed_when_progress_is_off(tmp_path: Path, capsys) -> None:
    _fit(tmp_path, progress=False)
    assert capsys.readouterr().out == ""


def test_the_rich_bar_on_a_terminal(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "is_terminal", lambda: True)
    _fit(tmp_path, progress=True)
    out = capsys.readouterr().out
    assert "train tiny epoch 3/3" in out and not any(LINE.match(line) for line in out.splitlines())


def test_epoch_line_shows_the_first_metric_of_a_row() -> None:
    row = {"epoch": 2, "train_loss": 0.0123, "val_recon_error": 0.5, "train_accuracy": 0.9}
    line = progress_mod.epoch_line("train ae", row, 12, "val_recon_error", 1.25)
    assert line == "train ae epoch 2/12  loss 0.0123  val_recon_error 0.5000  1.2 s"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_is_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    assert is_terminal(_Tty()) and not is_terminal(io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not is_terminal(io.StringIO())  # a log file stays a log file
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert not is_terminal(_Tty())


def test_count_lines_writes_at_most_parts_lines() -> None:
    out = io.StringIO()
    report = count_lines("accuracy", 25, out, parts=5)
    for k in range(1, 26):
        report(k)
    done = [line.split(" (")[0] for line in out.getvalue().splitlines()]
    assert done == [f"accuracy {k}/25" for k in (5, 10, 15, 20, 25)]


@pytest.mark.slow
def test_edgekd_train_logged_to_a_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndata: {name: digits}\nmodel: {name: mlp, kwargs: {hidden: [32]}}\n"
                      "train: {epochs: 2, batch_size: 64, lr: 0.05}\n")  # fmt: skip
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "edgekd", "train", str(recipe), "--runs-dir", str(tmp_path / "runs")]
    with log.open("w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=Path(__file__).parent.parent)
    lines = log.read_text().splitlines()
    assert [LINE.match(line).group(2) for line in lines[:2]] == ["1", "2"]
    assert lines[2].startswith("run folder: ")
