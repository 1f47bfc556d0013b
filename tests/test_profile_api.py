"""edgekd.profile (profile_run, profile_files, `edgekd profile`) on small run folders built here.

Teacher and student checkpoints, an ONNX export, full-integer int8 and float .tflite files (from
tf.keras), a corrupt file, and every network of a DML run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _train import cnn_recipe

from edgekd.atomic import atomic_write_json
from edgekd.cli import main as cli_main
from edgekd.data import load_data
from edgekd.distill.runner import run_training
from edgekd.errors import EdgekdError
from edgekd.models import build_model, save_model
from edgekd.profile import ProfileOptions, profile_files, profile_run
from edgekd.recipe import recipe_from_dict

SHAPE = (1, 8, 8)  # digits: 8x8 grey images, 10 classes


def _keras_tflite(out_dir: Path) -> tuple[Path, Path]:
    """An int8 (int8 I/O) and a float .tflite with the digits input (8, 8, 1) and 10 outputs."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 1), batch_size=1)
    y = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    y = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    y = tf.keras.layers.Flatten()(y)
    y = tf.keras.layers.Dense(10)(y)
    m = tf.keras.Model(inp, y)
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(16):
            yield [rng.standard_normal((1, 8, 8, 1)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8 = out_dir / "model_int8.tflite"
    int8.write_bytes(conv.convert())
    fp32 = out_dir / "model_fp32.tflite"
    fp32.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return int8, fp32


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    splits = load_data("digits", seed=0)
    atomic_write_json(root / "data.json", splits.describe())
    torch.manual_seed(0)
    kw = {"input_shape": list(SHAPE), "num_classes": 10}
    teacher = build_model("cnn", channels=[8, 16], **kw)
    student = build_model("cnn", channels=[4, 8], **kw)
    save_model(root / "teacher.pt", teacher, "cnn", {**kw, "channels": [8, 16]})
    save_model(root / "student.pt", student, "cnn", {**kw, "channels": [4, 8]})
    save_model(
        root / "baseline" / "model.pt",
        build_model("cnn", channels=[4, 8], **kw),
        "cnn",
        {**kw, "channels": [4, 8]},
    )  # as `edgekd run` nests it
    onnx_dir = root / "export" / "onnx"
    onnx_dir.mkdir(parents=True)
    torch.onnx.export(student.eval(), torch.zeros(1, *SHAPE), str(onnx_dir / "model.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y"])  # fmt: skip
    mcu = root / "export" / "stm32f746-disco"
    mcu.mkdir(parents=True)
    _keras_tflite(mcu)
    bad = root / "export" / "broken"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"this is not an onnx file")
    return root


@pytest.fixture(scope="module")
def report(run_dir: Path) -> dict:
    return profile_run(
        run_dir, ProfileOptions(runs=5, warmup=1, samples=60, targets=["stm32f746-disco", "rp2040-pico"])
    )


@pytest.mark.slow
def test_run_folder_report_rows(report: dict, run_dir: Path) -> None:
    rows = {r["id"]: r for r in report["artifacts"]}
    assert "teacher @ pytorch" in rows and "student @ pytorch" in rows
    assert rows["baseline (labels only) @ pytorch"]["role"] == "baseline"
    assert "onnx/model.onnx @ onnxruntime" in rows
    int8 = "stm32f746-disco/model_int8.tflite"
    for rt in ("litert", "litert-ref", "tflm"):
        assert f"{int8} @ {rt}" in rows, rows.keys()
    # the float model is not run on TFLite Micro, and says why
    assert "stm32f746-disco/model_fp32.tflite @ tflm" not in rows
    assert any("model_fp32.tflite: tflm skipped" in n for n in report["notes"])
    for rid, r in rows.items():
        if "broken" in rid:
            continue
        assert r["error"] is None, (rid, r["error"])
        lat = r["latency"]
        assert lat["runs"] == 5 and 0 < lat["p50_ms"] <= lat["p99_ms"]
        assert r["flash_bytes"] == Path(r["path"]).stat().st_size
        assert r["accuracy"]["n"] == 60
        assert r["rss"] is None  # host RSS is off by default (in-process figures are meaningless)
    student = rows["student @ pytorch"]
    assert student["accuracy"]["vs_teacher"]["agreement"] is not None
    assert sum(student["accuracy"]["vs_teacher"]["cross_table"].values()) == 60
    assert "vs_teacher" not in rows["teacher @ pytorch"]["accuracy"]
    # the ONNX export of the student agrees with the student exactly
    assert rows["onnx/model.onnx @ onnxruntime"]["macs"]["total"] == student["macs"]["total"]
    assert rows["onnx/model.onnx @ onnxruntime"]["accuracy"]["top1"] == pytest.approx(
        student["accuracy"]["top1"]
    )
    tflm = rows[f"{int8} @ tflm"]
    arena = tflm["arena"]
    assert arena["tflm"]["total"] == arena["tflm"]["head"] + arena["tflm"]["tail"] > 0
    assert arena["greedy_head"] == arena["tflm"]["head"]
    assert arena["optimized_head"] <= arena["greedy_head"]
    assert len(arena["timeline"]) == 4  # conv, depthwise, reshape, fully connected
    assert tflm["macs"]["total"] == 8 * 8 * 4 * 9 + 8 * 8 * 4 * 9 + 256 * 10
    assert set(tflm["mcu_estimate"]) == {"stm32f746-disco", "rp2040-pico"}
    # TFLM and LiteRT reference kernels give the same int8 predictions here
    assert tflm["accuracy"]["top1"] == pytest.approx(rows[f"{int8} @ litert-ref"]["accuracy"]["top1"])
    fit = {(f["target"], f["artifact"]): f for f in report["fit"]}
    assert fit[("stm32f746-disco", int8)]["pass"] is True


def test_corrupt_artifact_is_a_row_error(report: dict) -> None:
    broken = [r for r in report["artifacts"] if "broken" in r["label"]]
    assert len(broken) == 1 and "broken/model.onnx" in broken[0]["error"]
    assert sum(1 for r in report["artifacts"] if not r["error"]) >= 7


def test_report_files_and_html_plots(report: dict, run_dir: Path) -> None:
    for ext in ("json", "md", "html"):
        assert (run_dir / f"report.{ext}").stat().st_size > 0
    saved = json.loads((run_dir / "report.json").read_text())
    assert [r["id"] for r in saved["artifacts"]] == [r["id"] for r in report["artifacts"]]
    page = (run_dir / "report.html").read_text()
    for sec in ("summary", "fit", "pareto-latency", "pareto-flash", "memory-timeline", "macs-per-layer",
                "confusion-matrix"):  # fmt: skip
        assert f'<section id="{sec}">' in page, sec
        body = page.split(f'<section id="{sec}">', 1)[1].split("</section>", 1)[0]
        if sec not in ("summary", "fit"):
            assert re.search(r'<img id="plot-[^"]+" alt="[^"]*" src="data:image/png;base64,', body), sec
    assert "http://" not in page and "https://" not in page  # self-contained
    assert (run_dir / "plots" / "pareto_latency.png").exists()
    md = (run_dir / "report.md").read_text()
    assert "| Artifact |" in md and "plots/pareto_latency.png" in md


def test_profile_files_without_data_measures_latency_only(run_dir: Path, tmp_path: Path) -> None:
    onnx = run_dir / "export" / "onnx" / "model.onnx"
    copy = tmp_path / "m.onnx"
    copy.write_bytes(onnx.read_bytes())
    rep = profile_files([copy], options=ProfileOptions(runs=3, warmup=0, html_path=tmp_path / "r.html"))
    (row,) = rep["artifacts"]
    assert row["error"] is None and row["latency"]["runs"] == 3 and "accuracy" not in row
    assert (tmp_path / "r.html").exists()


def test_profile_files_mismatched_data_is_an_error(run_dir: Path, tmp_path: Path) -> None:
    npz = tmp_path / "wrong.npz"
    np.savez(npz, x=np.zeros((4, 1, 5, 5), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(EdgekdError, match="does not match"):
        profile_files([run_dir / "student.pt"], data=npz, options=ProfileOptions(runs=2, warmup=0))


def test_float_model_on_tflm_is_a_clear_error(run_dir: Path) -> None:
    fp32 = run_dir / "export" / "stm32f746-disco" / "model_fp32.tflite"
    with pytest.raises(EdgekdError, match="cannot run on TFLite Micro"):
        profile_files([fp32], options=ProfileOptions(runtimes=["tflm"], runs=2, warmup=0))


def test_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(EdgekdError, match="junk.tflite"):
        profile_files([junk], options=ProfileOptions(runs=2, warmup=0))


def test_cli_exit_codes(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def code(*args: str) -> int:
        with pytest.raises(SystemExit) as e:
            cli_main(["profile", *args])
            raise SystemExit(0)
        return int(e.value.code or 0)

    assert code(str(tmp_path / "nope")) == 2
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert code(str(empty)) == 2
    assert "no teacher.pt" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"garbage")
    assert code(str(junk)) == 2
    ok = code(str(run_dir / "student.pt"), "--runs", "2", "--warmup", "0", "--samples", "20", "--json",
              str(tmp_path / "s.json"))  # fmt: skip
    assert ok == 0
    rep = json.loads((tmp_path / "s.json").read_text())
    assert rep["artifacts"][0]["accuracy"]["n"] == 20  # data.json of the enclosing run folder
    # one good and one corrupt file: the good one is profiled, exit code 1
    assert (
        code(str(run_dir / "student.pt"), str(junk), "--runs", "2", "--warmup", "0", "--samples", "10") == 1
    )
    out = capsys.readouterr()
    assert "student" in out.out and "junk.onnx" in out.out and "1 of 2 artifact(s) failed" in out.err


@pytest.mark.slow
def test_cli_entry_point_runs_as_a_process(run_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd.cli", "profile", str(run_dir / "nope.pt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


def test_anomaly_autoencoder_gets_auc_and_f1(tmp_path: Path) -> None:
    """An ONNX autoencoder on (N, F) data: reconstruction error is the anomaly score."""
    torch.manual_seed(0)
    f = 8
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((2, f)).astype(np.float32)
    normal = rng.standard_normal((40, 2)).astype(np.float32) @ basis  # lies in a 2-d subspace
    anomal = rng.standard_normal((10, f)).astype(np.float32) * 2.0
    x = np.concatenate([normal, anomal])
    y = np.r_[np.zeros(40), np.ones(10)].astype(np.int64)
    npz = tmp_path / "ad.npz"
    np.savez(npz, x=x, y=y, task=np.array("anomaly"))
    # a linear autoencoder that projects onto the normal subspace reconstructs normal data exactly
    q, _ = np.linalg.qr(basis.T)
    ae = torch.nn.Sequential(torch.nn.Linear(f, 2, bias=False), torch.nn.Linear(2, f, bias=False)).eval()
    with torch.no_grad():
        ae[0].weight.copy_(torch.from_numpy(q.T.copy()))
        ae[1].weight.copy_(torch.from_numpy(q.copy()))
    path = tmp_path / "ae.onnx"
    torch.onnx.export(ae, torch.zeros(1, f), str(path), dynamo=False)
    with torch.no_grad():
        ae[1].weight.mul_(0.9)  # a slightly worse "teacher" that still ranks the anomalies first
    teacher = tmp_path / "teacher_ae.onnx"
    torch.onnx.export(ae, torch.zeros(1, f), str(teacher), dynamo=False)
    rep = profile_files([path], data=npz, teacher=teacher, options=ProfileOptions(runs=2, warmup=0))
    t_row, row = rep["artifacts"]
    assert t_row["role"] == "teacher" and t_row["accuracy"]["auc"] == pytest.approx(1.0)
    assert row["accuracy"]["vs_teacher"]["agreement"] == pytest.approx(1.0)
    assert row["error"] is None
    a = row["accuracy"]
    assert a["task"] == "anomaly" and a["auc"] == pytest.approx(1.0)
    assert a["f1"] == pytest.approx(1.0) and a["precision"] == 1.0 and a["recall"] == 1.0
    assert row["macs"]["total"] == 2 * f + f * 2


@pytest.mark.slow
def test_rss_in_a_fresh_subprocess(run_dir: Path) -> None:
    rep = profile_files(
        [run_dir / "export" / "onnx" / "model.onnx"],
        options=ProfileOptions(runs=2, warmup=0, rss="subprocess"),
    )
    rss = rep["artifacts"][0]["rss"]
    assert rss["method"].startswith("fresh subprocess")
    assert rss["peak_bytes"] >= rss["baseline_bytes"] > 0 and rss["delta_bytes"] > 0


@pytest.mark.slow
def test_files_with_named_data_and_teacher(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["profile", str(run_dir / "student.pt"), "--data", "digits", "--teacher", str(run_dir / "teacher.pt"),
            "--samples", "30", "--runs", "2", "--warmup", "0", "--json", str(out), "--md", str(tmp_path / "r.md")]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        cli_main(args)
        raise SystemExit(0)
    assert e.value.code in (0, None)
    rep = json.loads(out.read_text())
    student = next(r for r in rep["artifacts"] if r["label"] == "student.pt")
    assert student["accuracy"]["n"] == 30 and 0 <= student["accuracy"]["vs_teacher"]["agreement"] <= 1
    assert (tmp_path / "plots" / "pareto_latency.png").exists()


@pytest.mark.slow
def test_profile_all_networks_of_a_dml_run(tmp_path, run_cli):
    r = recipe_from_dict(cnn_recipe(method={"name": "dml", "params": {"peers": 2}}, train={"epochs": 1}))
    run = run_training(r, tmp_path, distill=False, progress=False)
    args = [
        "profile",
        str(run.root),
        "--all-networks",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--runtime",
        "pytorch",
    ]
    code, err = run_cli(args)
    assert code == 0, err
    report = json.loads((run.root / "report-networks.json").read_text())
    names = sorted(Path(a["path"]).name for a in report["artifacts"])
    assert names == ["model.pt", "network-peer1.pt"]
