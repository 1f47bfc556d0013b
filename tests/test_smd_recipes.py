"""examples/smd_*.yaml: the SMD example recipes end to end through `edgekd run`.

On a short setting (one machine, short windows, a large stride, one epoch): noisy Born-Again generations
-> MCU conv1d-ae student from their ensemble (train, distill, export tflite-micro, profile), and the
privileged-sensor student; then per-step scoring of the float runs and of the int8 TFLite Micro file.
"""

import json
import os
from pathlib import Path

import pytest

from edgekd.cli import main
from edgekd.data.smd import list_machines, smd_root
from edgekd.timeseries.scoring import score_run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHORT = ["--set", "data.options.length=8", "--set", "data.options.stride=32", "--set", "data.options.test_stride=8",
         "--set", "train.epochs=1", "--set", "profile.runs=2", "-q"]  # fmt: skip


@pytest.fixture(scope="module")
def smd_ok():
    if "machine-1-6" not in list_machines() and not os.environ.get("CI"):
        pytest.skip(f"SMD machine-1-6 not in EDGEKD_DATA_DIR ({smd_root()})")
    assert "machine-1-6" in list_machines(), f"CI is set but SMD is missing from {smd_root()}"


def _run(args, capsys=None):
    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip() if capsys else ""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("smd") / "runs"


@pytest.fixture(scope="module")
def lstm_teacher(smd_ok, runs):
    code, _ = _run(["run", str(EXAMPLES / "smd_lstm_ae.yaml"), "--runs-dir", str(runs), *SHORT])
    assert code == 0
    return runs / "smd-lstm-ae"


@pytest.mark.slow
def test_noisy_generations_then_mcu_student_end_to_end(lstm_teacher, runs, capsys):
    code, err = _run(
        ["run", str(EXAMPLES / "smd_noisy_sequential.yaml"), "--runs-dir", str(runs), *SHORT], capsys
    )
    assert code == 0, err
    seq = runs / "smd-noisy-sequential"
    nets = json.loads((seq / "networks.json").read_text())["networks"]
    assert sorted(nets) == ["gen-1", "gen-2", "gen-3"]
    # generation 3 learned from the mean of generations 1-2 (born-again ensemble), 1 from the teacher
    g3 = (seq / "gen-3" / "recipe.yaml").read_text()
    assert "gen-1" in g3 and "gen-2" in g3
    code, err = _run(["run", str(EXAMPLES / "smd_mcu_conv1d.yaml"), "--runs-dir", str(runs), *SHORT], capsys)
    assert code == 0, err
    mcu = runs / "smd-mcu-conv1d"
    exp = json.loads((mcu / "export" / "tflite-micro" / "export.json").read_text())
    assert exp["task"]["task"] == "reconstruction" and exp["tflite"]["int8"]["kind"] == "full_integer"
    assert exp["checks"]["int8_score_spearman"] > 0.8
    assert exp["micro"]["arena"]["tflm"]["total"] > 0 and (mcu / "report.html").exists()

    fl = score_run(mcu)
    q = score_run(mcu, int8=mcu / "export" / "tflite-micro" / "model_int8.tflite")
    ens = score_run(seq, models=[seq / f"gen-{k}" / "student.pt" for k in (1, 2, 3)])
    for rep in (fl, q, ens):
        assert list(rep["machines"]) == ["machine-1-6"]
        m = rep["mean"]
        assert 0.5 < m["auc"] <= 1 and 0 < m["f1_val"] <= m["f1_pa_val"] and m["f1_best"] <= m["f1_pa_best"]
        assert m["f1_val"] <= m["f1_best"] + 1e-12  # the best threshold is best on the test labels
    # int8 scores follow the float ones (same windows, same steps)
    assert abs(q["mean"]["auc"] - fl["mean"]["auc"]) < 0.05


@pytest.mark.slow
def test_privileged_sensor_student_end_to_end(lstm_teacher, runs, capsys):
    code, err = _run(
        ["run", str(EXAMPLES / "smd_privileged_sensors.yaml"), "--runs-dir", str(runs), *SHORT], capsys
    )
    assert code == 0, err
    run = runs / "smd-privileged-sensors"
    data = json.loads((run / "data.json").read_text())
    assert data["extra_inputs"] == ["all_metrics"] and data["input_shape"] == [8, 10]
    exp = json.loads((run / "export" / "tflite-micro" / "export.json").read_text())
    assert exp["tflite"]["int8"]["input"]["nbytes"] == 8 * 10  # the export sees the 10 sensors only
    rep = score_run(run)
    base = score_run(run / "baseline")
    assert rep["mean"]["auc"] > 0.5 and base["mean"]["auc"] > 0.5
