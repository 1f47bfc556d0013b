"""benchmarks/teachers/: the committed reference teachers.

The committed reference teachers (benchmarks/teachers/): the checkpoint is the one recorded (sha256),
loads as an edgekd model, and still scores its recorded test accuracy on a sample of its test split.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEACHERS = sorted(p.parent.name for p in (REPO / "benchmarks" / "teachers").glob("*/teacher.json"))
SAMPLE = 2000


def test_the_reference_teachers_are_committed():
    assert "digits" in TEACHERS  # the one that needs no data directory


@pytest.mark.slow
@pytest.mark.parametrize("name", TEACHERS)
def test_reference_teacher_matches_its_record(name):
    sys.path.insert(0, str(REPO))
    from benchmarks.teachers import RECIPES, TEACHERS_DIR, evaluate_teacher

    info = json.loads((TEACHERS_DIR / name / "teacher.json").read_text())
    model = TEACHERS_DIR / name / "model.pt"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == info["sha256"]
    assert model.stat().st_size < 8 * 2**20  # a few MB: fp16 weights
    assert info["retrain"] == f"python benchmarks/teachers.py train {name}" and name in RECIPES
    data = RECIPES[name]["data"]["name"]
    if data != "digits":
        from edgekd.data.registry import data_dir

        if not (data_dir() / data).exists():
            pytest.skip(f"{data} not in EDGEKD_DATA_DIR")
    got = evaluate_teacher(name, limit=SAMPLE)
    p = info["test_accuracy"]
    tolerance = 3 * math.sqrt(max(p * (1 - p), 1e-4) / got["n"]) + 0.002
    assert got["accuracy"] >= p - tolerance, f"{name}: {got['accuracy']:.4f} on {got['n']} test examples"


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_folder_gives_edgekd_run_its_accuracy(name):
    """`edgekd run` with `teacher.path: benchmarks/teachers/<name>/model.pt` shows the recorded accuracy."""
    from edgekd.pipeline import _final_accuracy
    from edgekd.runfolder import RunFolder

    info = json.loads((REPO / "benchmarks" / "teachers" / name / "teacher.json").read_text())
    assert _final_accuracy(RunFolder(REPO / "benchmarks" / "teachers" / name)) == info["test_accuracy"]


@pytest.mark.parametrize("recipe", ["demo.yaml", "demo_mnist.yaml"])
def test_demo_uses_a_reference_teacher_on_its_split(recipe):
    """The demo's teacher never saw the demo's test examples: same data, val_fraction and split_seed."""
    from edgekd.recipe import load_recipe

    r = load_recipe(REPO / "examples" / recipe)
    if r.teacher is None or not r.teacher.path or "benchmarks/teachers/" not in r.teacher.path:
        pytest.skip(f"{recipe} trains its own teacher")
    name = Path(r.teacher.path).parent.name
    teacher = json.loads((REPO / "benchmarks" / "teachers" / name / "teacher.json").read_text())["data"]
    assert (r.data.name, r.data.val_fraction, r.data.split_seed) == (
        teacher["name"], teacher["val_fraction"], teacher["split_seed"])  # fmt: skip
    assert (REPO / r.teacher.path).is_file()
