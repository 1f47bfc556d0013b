"""benchmarks/int8_fidelity.py's bookkeeping: the QAT fine-tune recipe and the validation choice of its
learning rate (test never read)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import int8_fidelity as bench  # noqa: E402
from benchmarks._common import RunStore  # noqa: E402


def test_qat_recipe_fine_tunes_the_float_student_with_its_own_losses() -> None:
    from edgekd.recipe import load_recipe, recipe_from_dict

    demo = load_recipe(REPO / "examples" / "demo.yaml").to_dict()
    r = bench.qat_recipe(demo, REPO / "runs" / "x", "digits", 0.01, 2)
    parsed = recipe_from_dict(r, "qat recipe")
    assert parsed.train.qat and parsed.model.init == "runs/x" and parsed.seed == 2
    assert parsed.train.lr == demo["train"]["lr"] * 0.01 and parsed.losses == recipe_from_dict(demo).losses
    assert parsed.train.teacher_views == bench.QAT_EPOCHS["digits"] <= demo["train"]["teacher_views"]
    assert parsed.name != demo["name"] and "lr0.01-s2" in parsed.name


def test_lr_is_chosen_on_validation_then_seeds_follow(tmp_path) -> None:
    st = RunStore(tmp_path)
    spec = {"data": "digits", "recipe": {}, "runs": tmp_path, "source": "t"}
    assert bench.chosen_lr(st) is None and len(bench.steps(spec, st)) == 2 + len(bench.QAT_LR_FACTORS)
    *others, hi, lo = bench.QAT_LR_FACTORS
    for f in others:
        st.put(bench.qat_key(f, 0), {"lr_factor": f, "fake_quant_val_accuracy": 0.8, "fake_quant_val_loss": 0.1,
                                     "int8_accuracy": 0.99})  # fmt: skip
    assert bench.chosen_lr(st) is None  # not before every factor has run
    st.put(bench.qat_key(hi, 0), {"lr_factor": hi, "fake_quant_val_accuracy": 0.9, "fake_quant_val_loss": 0.3,
                                  "int8_accuracy": 0.99})  # fmt: skip
    st.put(bench.qat_key(lo, 0), {"lr_factor": lo, "fake_quant_val_accuracy": 0.9, "fake_quant_val_loss": 0.2,
                                  "int8_accuracy": 0.10})  # fmt: skip
    assert bench.chosen_lr(st) == lo  # equal validation accuracy: the lower validation loss; test unseen
    keys = [k for k, _ in bench.steps(spec, st)]
    assert keys[-2:] == [bench.qat_key(lo, 1), bench.qat_key(lo, 2)]
