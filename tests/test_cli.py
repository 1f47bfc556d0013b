"""edgekd.cli: train/distill end to end, and one-line errors with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _train import cnn_recipe
from click.testing import CliRunner

from edgekd.cli import cli, main


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _run_main(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rec = _write(d / "teacher.yaml", {"name": "t", "data": {"name": "digits"}, "model": {"name": "mlp", "kwargs": {"hidden": [64]}},
                                      "train": {"epochs": 3, "batch_size": 64}})  # fmt: skip
    res = CliRunner().invoke(cli, ["train", str(rec), "--runs-dir", str(d / "runs"), "-q"])
    assert res.exit_code == 0, res.output
    return d


@pytest.mark.slow
def test_train_and_distill_with_overrides(trained):
    d = trained
    assert (d / "runs" / "t" / "model.pt").exists()
    rec = _write(d / "student.yaml", {"name": "s", "data": {"name": "digits"}, "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
                                      "teacher": {"path": str(d / "runs" / "t")}, "method": {"name": "kd"},
                                      "train": {"epochs": 2, "batch_size": 64}})  # fmt: skip
    res = CliRunner().invoke(cli, ["distill", str(rec), "--runs-dir", str(d / "runs"), "-q", "--set", "method.params.temperature=8",
                                   "--set", "train.epochs=3"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "test accuracy: 0." in res.output
    saved = yaml.safe_load((d / "runs" / "s" / "recipe.yaml").read_text())
    assert saved["method"]["params"]["temperature"] == 8 and saved["train"]["epochs"] == 3
    assert (d / "runs" / "s" / "seeds.json").exists() and (d / "runs" / "s" / "data.json").exists()


@pytest.mark.parametrize(
    "recipe, pattern",
    [
        ({"trian": {}}, r"unknown key 'trian'; valid keys here: name, seed"),
        ({"train": {"lr": "fast"}}, r"key 'train.lr' must be float"),
        ({"model": {"name": "resnet-9000"}}, r"unknown model 'resnet-9000'; valid names: .*hinton-student"),
        ({"method": {"name": "magic"}, "teacher": {"path": "x"}}, r"(unknown method 'magic'|teacher.path)"),
        (
            {"data": {"name": "mnist", "options": {"root": "/nonexistent"}}},
            r"data set 'mnist' not found in /nonexistent .*EDGEKD_DATA_DIR",
        ),
        ({"method": {"name": "kd", "params": {"temprature": 2}}}, r"teacher.path"),
    ],
)
def test_bad_recipes_give_one_line_errors(tmp_path, capsys, recipe, pattern):
    base = {
        "name": "bad",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
        "train": {"epochs": 1},
    }
    for k, v in recipe.items():
        base[k] = v
    rec = _write(tmp_path / "r.yaml", base)
    cmd = "distill" if "teacher" in recipe or recipe.get("method", {}).get("name") == "kd" else "train"
    code, err = _run_main([cmd, str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    import re

    assert re.search(pattern, err), err
    assert not (tmp_path / "runs" / "bad" / "model.pt").exists()


def test_unknown_method_param_is_named(trained, tmp_path, capsys):
    rec = _write(tmp_path / "r.yaml", {"name": "x", "data": {"name": "digits"}, "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
                                       "teacher": {"path": str(trained / "runs" / "t")}, "method": {"name": "kd", "params": {"temprature": 2}}})  # fmt: skip
    code, err = _run_main(["distill", str(rec), "--runs-dir", str(tmp_path), "-q"], capsys)
    assert code == 2 and "unknown key(s) temprature" in err and "valid: temperature, alpha" in err


def test_corrupt_teacher_checkpoint(tmp_path, capsys):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"this is not a checkpoint")
    rec = _write(
        tmp_path / "r.yaml",
        {"name": "x", "data": {"name": "digits"}, "teacher": {"path": str(bad)}, "method": {"name": "kd"}},
    )
    code, err = _run_main(["distill", str(rec), "--runs-dir", str(tmp_path), "-q"], capsys)
    assert code == 2 and f"{bad}: model file is not a PyTorch checkpoint" in err


def test_bad_yaml_and_bad_override(tmp_path, capsys):
    p = tmp_path / "r.yaml"
    p.write_text("name: [unclosed\n")
    code, err = _run_main(["train", str(p)], capsys)
    assert code == 2 and "not valid YAML at line" in err
    p.write_text("name: ok\n")
    code, err = _run_main(["train", str(p), "--set", "train.lr"], capsys)
    assert code == 2 and "expected KEY=VALUE" in err


def test_console_script_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgekd.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "distill" in out.stdout and "train" in out.stdout


@pytest.mark.parametrize(
    "over, pattern",
    [
        (
            {"losses": [{"name": "hint", "student": "features.9", "teacher": "features.1"}]},
            r"no module 'features.9' in the student .*nearest: features",
        ),
        (
            {
                "losses": [
                    {"name": "hint", "student": "features.1", "teacher": "features.1", "adapter": "none"}
                ]
            },
            r"differ and adapter is 'none'",
        ),
        ({"losses": [{"name": "hnt"}]}, r"unknown loss 'hnt'; valid names: .*hint"),
        ({"scheme": {"name": "born-agian"}}, r"unknown scheme 'born-agian'; valid names: born-again"),
        (
            {"stages": [{"epochs": 1, "trainable": "featurs", "losses": [{"name": "ce"}]}]},
            r"trainable 'featurs' selects no student parameter; nearest module paths: features",
        ),
        (
            {"losses": [{"name": "recon-mse"}]},
            r"loss 'recon-mse' is for reconstruction and this data set's task is 'classification'",
        ),
        ({"method": {"name": "dml", "params": {"peers": 1}}, "teacher": None}, r"at least 2 peers"),
        ({"scheme": {"name": "born-again", "params": {"generations": 0}}}, r"needs at least 1 generation"),
        (
            {"losses": [{"name": "kd", "params": {"temperature": -1}}]},
            r"params.temperature=-1.0: must be > 0",
        ),
        (
            {"losses": [{"name": "soft-ce", "params": {"temperature": 0}}]},
            r"params.temperature=0.0: must be > 0",
        ),
        (
            {"losses": [{"name": "wasserstein-kd", "params": {"eps": -0.5}}]},
            r"params.eps=-0.5: must be >= 0 \(the radius",
        ),
    ],
)
def test_bad_distillation_input_is_one_line_and_writes_nothing(cnn_teacher, tmp_path, run_cli, over, pattern):
    import re

    rec = cnn_recipe(teacher={"path": str(cnn_teacher)}, method={"name": "supervised"})
    rec.update(over)
    if rec.get("teacher") is None:
        rec.pop("teacher")
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(rec))
    cmd = "distill" if "teacher" in rec else "train"
    code, err = run_cli([cmd, str(p), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert not (tmp_path / "runs").exists()
