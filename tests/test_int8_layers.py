"""Per-layer float-vs-int8 diff (issue 27, `edgekd profile --layers`): SQNR, max error and accuracy with
one layer int8, the layers that cost the most named in one line; bounded on untrusted inputs.

SQNR thresholds: uniform 8-bit quantization of a signal that fills its range gives about
6.02 * 8 + 1.76 = 50 dB, less the crest factor of ReLU activations (peak / RMS of 4-8: 12-18 dB), so a
well-calibrated layer's own quantization (SQNR alone) sits near 35-45 dB (the digits demo student:
40.7-45.7 dB) and the accumulated error stays above 30 dB (35-41 dB). 25 dB alone / 20 dB accumulated leave
room for a 2-epoch student; ranges from 5 samples clip the layer they miss and cost it more than 10 dB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.data.evalset import EvalSet
from edgekd.errors import EdgekdError
from edgekd.graph import requantize as rq
from edgekd.profile import layers as L


def test_sqnr_and_summary_ranking() -> None:
    assert L.sqnr_db(1.0, 0.01) == pytest.approx(20.0) and L.sqnr_db(0.0, 1.0) is None
    rows = [{"name": "a", "op": "CONV_2D", "accuracy_alone": 0.9, "sqnr_alone_db": 40.0, "clipped": 0.0},
            {"name": "p", "op": "PAD", "accuracy_alone": 0.5, "sqnr_alone_db": 1.0, "clipped": 0.0},
            {"name": "b", "op": "CONV_2D", "accuracy_alone": 0.95, "sqnr_alone_db": 12.0, "clipped": 0.1},
            {"name": "c", "op": "FULLY_CONNECTED", "accuracy_alone": 0.95, "sqnr_alone_db": 30.0, "clipped": 0}]  # fmt: skip
    rep = {"float_accuracy": 0.95, "int8_accuracy": 0.9, "samples": 10, "layers": rows}
    assert [r["name"] for r in L.worst_layers(rep)] == ["a", "b", "c"]  # accuracy lost first; PAD left out
    line = L.summary_line(rep)
    assert line.startswith(
        "int8 90.00% vs float 95.00% on 10 samples; the layers that cost the most: a (CONV_2D, -5.00"
    )


def test_bad_export_folders_are_one_line(tmp_path: Path) -> None:
    from edgekd.graph.sample_models import sample_models

    data = EvalSet(np.zeros((4, 1, 16, 16), np.float32), np.zeros(4, int))
    (tmp_path / "model_int8.tflite").write_bytes(b"\x00" * 64)
    (tmp_path / "model_fp32.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(EdgekdError, match="model_fp32.tflite") as e:
        L.layer_report(tmp_path, data)
    assert "\n" not in str(e.value)
    models = sample_models(["tiny_cnn", "mlp"])
    (tmp_path / "model_int8.tflite").write_bytes(models["tiny_cnn"].read_bytes())
    (tmp_path / "model_fp32.tflite").write_bytes(models["mlp"].read_bytes())
    with pytest.raises(EdgekdError, match="different operators; re-export"):
        L.layer_report(tmp_path, data)


def test_tensor_capture_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.graph import read_tflite
    from edgekd.graph.sample_models import sample_models

    m = read_tflite(sample_models(["tiny_cnn"])["tiny_cnn"])
    monkeypatch.setattr(rq, "MAX_CAPTURE_BYTES", 1024)
    with pytest.raises(EdgekdError, match="too large for a per-tensor diff"):
        next(
            rq.iter_tensors(m, np.zeros((1, 16, 16, 1), np.float32), [t for _, t in rq.op_output_tensors(m)])
        )
    assert L.MAX_SAMPLES == 256  # samples are capped too (EvalSet.subsample)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-epoch digits CNN student exported for TFLite Micro twice: the default calibration (200
    stratified samples) and a deliberately broken one (min/max from 5 samples)."""
    from _train import cnn_recipe

    from edgekd.distill.runner import run_training
    from edgekd.export import export_run
    from edgekd.recipe import recipe_from_dict

    tmp = tmp_path_factory.mktemp("int8layers")
    run = run_training(recipe_from_dict(cnn_recipe(train={"epochs": 4, "batch_size": 32, "lr": 0.01,
                                                          "optimizer": "adam"})), tmp / "runs", distill=False,
                       progress=False)  # fmt: skip
    broken = tmp / "broken5.yaml"
    broken.write_text("split: train\nnum_samples: 5\nselection: first\nranges: minmax\n")
    good = export_run(run.root, target="tflite-micro", ranges="minmax")
    bad = export_run(run.root, target="tflite-micro", calibration=broken, out=run.root / "export" / "broken5")
    return {"run": run.root, "good": good, "bad": bad}


@pytest.mark.slow
def test_per_layer_diff_names_the_broken_layer(exports: dict[str, Path]) -> None:
    from edgekd.data.evalset import data_from_info
    from edgekd.runfolder import RunFolder

    run = RunFolder(exports["run"])
    data = data_from_info(run.read_json(run.data_info), None)
    good, bad = L.layer_report(exports["good"], data), L.layer_report(exports["bad"], data)
    assert good["samples"] == min(256, len(data.x)) and len(good["layers"]) == len(bad["layers"]) >= 4
    for r in good["layers"]:
        assert r["sqnr_alone_db"] > 25 and r["sqnr_db"] > 20 and 0 <= r["max_abs_error"] < 1e3, r
        assert 0 <= r["accuracy_alone"] <= 1
    drop = [g["sqnr_alone_db"] - b["sqnr_alone_db"] for g, b in zip(good["layers"], bad["layers"])]
    damaged = bad["layers"][int(np.argmax(drop))]
    assert max(drop) > 10 and damaged["clipped"] > 0.001
    assert bad["worst"][0] == damaged["name"] and f"most: {damaged['name']} (" in bad["summary"]
    assert damaged["name"] and not damaged["name"].startswith("model_")  # a PyTorch / ONNX name


@pytest.mark.slow
def test_profile_layers_cli_writes_the_section(exports: dict[str, Path], run_cli) -> None:  # noqa: ANN001
    import json

    code, err = run_cli(["profile", str(exports["run"]), "--layers", "--runs", "2", "--warmup", "0"])
    assert code == 0, err
    rep = json.loads((exports["run"] / "report.json").read_text())
    assert {Path(r["folder"]).name for r in rep["layers"]} == {"tflite-micro", "broken5"}
    assert "Per-layer float vs int8" in (exports["run"] / "report.md").read_text()
    assert "Per-layer float vs int8" in (exports["run"] / "report.html").read_text()
    assert "the layers that cost the most" in err
    code, err = run_cli(["profile", str(exports["good"] / "model_int8.tflite"), "--layers"])
    assert code == 2 and "--layers: give a run folder" in err
