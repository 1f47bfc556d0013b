"""Reliability and security (issue 8): each numbered fault has a test that failed before its fix."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from edgekd.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_text
from edgekd.distill.runner import run_training
from edgekd.distill.train import TrainingInterrupted, non_finite_tensors
from edgekd.errors import EdgekdError
from edgekd.models import load_model, save_model, trust_model_code
from edgekd.recipe import load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash and mode: what 'nothing changed' compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
        else:
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def _recipe(**over) -> dict:
    base = {
        "name": "r",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    }
    base.update(over)
    return base


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    r = recipe_from_dict(_recipe(name="teacher", model={"name": "mlp", "kwargs": {"hidden": [32]}}))
    return run_training(r, runs, distill=False, progress=False).root


# 1 ------------------------------------------------------------------------------------------------
def _plant_code_checkpoint(path: Path, marker: Path) -> Path:
    atomic_torch_save(path, {"format": "edgekd-model/1", "name": "subprocess:run",
                             "kwargs": {"args": ["touch", str(marker)]}, "state_dict": {}, "meta": {}})  # fmt: skip
    return path


def test_1_checkpoint_naming_code_is_refused_everywhere(tmp_path, run_cli):
    marker = tmp_path / "pwned"
    planted = _plant_code_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(EdgekdError, match=r"not a registered edgekd model.*--trust-model-code"):
        load_model(planted)
    assert not marker.exists()
    rec = _write(tmp_path / "d.yaml", _recipe(teacher={"path": str(planted)}, method={"name": "kd"}))
    for args in (
        ["export", str(planted), "--format", "onnx", "-o", str(tmp_path / "out")],
        ["profile", str(planted), "--data", "digits", "--runs", "1", "--warmup", "0"],
        ["distill", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"],
    ):
        code, err = run_cli(args)
        assert code == 2, args
        assert "not a registered edgekd model" in err and len(err.splitlines()) == 1, err
        assert not marker.exists(), args
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_1_user_model_from_a_file_needs_explicit_trust(tmp_path):
    path = tmp_path / "user.pt"
    save_model(path, torch.nn.Identity(), "torch.nn:Identity", {})
    with pytest.raises(EdgekdError, match="--trust-model-code"):
        load_model(path)
    with trust_model_code(["torch.nn:Identity"]):
        model, record = load_model(path)
    assert isinstance(model, torch.nn.Identity) and record["name"] == "torch.nn:Identity"
    with pytest.raises(EdgekdError):  # the trust ends with the context
        load_model(path)


# 2 ------------------------------------------------------------------------------------------------
def test_2_a_typo_changes_nothing_in_an_existing_run_folder(teacher, tmp_path, run_cli):
    runs = tmp_path / "runs"
    good = _write(
        tmp_path / "s.yaml", _recipe(name="s", teacher={"path": str(teacher)}, method={"name": "kd"})
    )
    assert run_cli(["distill", str(good), "--runs-dir", str(runs), "-q"])[0] == 0
    before = _tree(runs)
    typo = _write(tmp_path / "t.yaml", _recipe(name="s", teacher={"path": str(teacher)}, method={"name": "kd"},
                                               model={"name": "mlpp"}))  # fmt: skip
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(["distill", str(typo), "--runs-dir", str(runs), "-q", *extra])
        assert code == 2
        assert _tree(runs) == before, extra  # teacher.pt and everything else untouched, nothing moved


# 3 ------------------------------------------------------------------------------------------------
def test_3_finished_run_is_refused_and_overwrite_moves_it_aside(tmp_path, run_cli):
    runs = tmp_path / "runs"
    rec = _write(tmp_path / "r.yaml", _recipe())
    assert run_cli(["train", str(rec), "--runs-dir", str(runs), "-q"])[0] == 0
    (runs / "r" / "export").mkdir()
    (runs / "r" / "export" / "old.txt").write_text("from the old run")
    before = _tree(runs)
    code, err = run_cli(["train", str(rec), "--runs-dir", str(runs), "-q"])
    assert code == 2 and "holds a finished run" in err and "--overwrite" in err and "--resume" in err
    assert _tree(runs) == before
    assert run_cli(["train", str(rec), "--runs-dir", str(runs), "-q", "--overwrite"])[0] == 0
    moved = [p for p in runs.iterdir() if p.name.startswith("r.old-")]
    assert len(moved) == 1 and (moved[0] / "export" / "old.txt").exists()
    assert not (runs / "r" / "export").exists() and (runs / "r" / "model.pt").exists()


# 4 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, key",
    [("seed=3", "seed"), ("train.lr=0.1", "train.lr"), ("model.kwargs.hidden=[8]", "model.kwargs.hidden")],
)
def test_4_resume_refuses_a_changed_recipe(tmp_path, override, key, run_cli):
    r = recipe_from_dict(_recipe(train={"epochs": 3, "batch_size": 64, "lr": 0.05}))
    with pytest.raises(TrainingInterrupted):
        run_training(r, tmp_path, distill=False, progress=False, stop_after_epoch=1)
    rec = _write(tmp_path / "r.yaml", r.to_dict())
    before = _tree(tmp_path / "r")
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path), "-q", "--resume", "--set", override])
    assert code == 2 and f"differs from the recorded one in {key}" in err, err
    assert _tree(tmp_path / "r") == before


def test_4_resume_may_change_the_number_of_epochs(tmp_path, run_cli):
    r = recipe_from_dict(_recipe(train={"epochs": 3, "batch_size": 64, "lr": 0.05}))
    with pytest.raises(TrainingInterrupted):
        run_training(r, tmp_path, distill=False, progress=False, stop_after_epoch=1)
    rec = _write(tmp_path / "r.yaml", r.to_dict())
    args = ["train", str(rec), "--runs-dir", str(tmp_path), "-q", "--resume", "--set", "train.epochs=2"]
    assert run_cli(args)[0] == 0
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


# 5 ------------------------------------------------------------------------------------------------
def test_5_every_float_notation_is_a_number(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\nmethod:\n  params: {alpha: 9e-1}\n")
    r = load_recipe(p)
    assert r.train.lr == 0.001 and r.train.weight_decay == 0.0005 and r.method.params["alpha"] == 0.9
    r = load_recipe(p, ["train.lr=1e6", "train.momentum=.5", "train.grad_clip=2"])
    assert r.train.lr == 1e6 and r.train.momentum == 0.5 and r.train.grad_clip == 2.0
    p.write_text("train:\n  lr: '2e-2'\n")  # quoted, still a number a user meant
    assert load_recipe(p).train.lr == 0.02
    for bad in ("train.lr=fast", "train.lr=nan"):
        with pytest.raises(EdgekdError, match="train.lr"):
            load_recipe(p, [bad])


# 6 ------------------------------------------------------------------------------------------------
def test_6_an_exploding_loss_stops_and_keeps_the_last_good_epoch_exportable(tmp_path, run_cli):
    # epoch 1 trains normally; the step schedule then multiplies the lr by 1e6: the loss explodes
    rec = _write(tmp_path / "r.yaml", _recipe(model={"name": "cnn", "kwargs": {"width": 0.25}},
                 train={"epochs": 3, "batch_size": 64, "lr": 0.05, "schedule": "step", "step_size": 1, "gamma": 1e6}))  # fmt: skip
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path), "-q"])
    assert code == 2 and len(err.splitlines()) == 1
    assert re.search(r"(exploded|became (nan|inf)|non-finite).*epoch 2", err), err
    assert "model.pt holds epoch 1, the last good one" in err
    model, record = load_model(tmp_path / "r" / "model.pt")
    assert record["meta"]["epoch"] == 1 and not non_finite_tensors(model)


def test_6_non_finite_batchnorm_statistics_are_found():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert non_finite_tensors(net) == []
    net[1].running_var[0] = float("inf")
    assert non_finite_tensors(net) == ["1.running_var"]


def test_6_nan_in_the_first_epoch_keeps_nothing(tmp_path):
    r = recipe_from_dict(_recipe(train={"epochs": 2, "batch_size": 64, "lr": 1e12}))
    with pytest.raises(EdgekdError, match=r"(exploded|became (nan|inf)).*no good epoch yet"):
        run_training(r, tmp_path, distill=False, progress=False)
    assert not (tmp_path / "r" / "model.pt").exists()


# 8 ------------------------------------------------------------------------------------------------
def test_8_teacher_path_is_resolved_against_the_runs_dir(teacher, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./runs here: only --runs-dir can find it
    runs = teacher.parent
    for path in ("runs/teacher", "teacher"):
        rec = _write(
            tmp_path / "s.yaml", _recipe(name=f"s{len(path)}", teacher={"path": path}, method={"name": "kd"})
        )
        code, err = run_cli(["distill", str(rec), "--runs-dir", str(runs), "-q"])
        assert code == 0, err
        assert (runs / f"s{len(path)}" / "teacher.pt").read_bytes() == (teacher / "model.pt").read_bytes()


def test_8_the_readme_tour_names_a_board_the_hinton_student_fits():
    tour = (REPO / "README.md").read_text().split("## Quick tour", 1)[1].split("##", 1)[0]
    board = re.search(r"edgekd export runs/hinton-student-kd --target (\S+)", tour).group(1)
    from edgekd.targets import load_target

    target = load_target(board)
    # the Hinton student (784-800-800-10) is ~1.3 MB of int8 weights
    student_flash = (784 * 800 + 800 * 800 + 800 * 10) * 1 + (800 + 800 + 10) * 4
    assert target.flash_bytes is None or target.flash_bytes > 1.2 * student_flash, board


# 9 ------------------------------------------------------------------------------------------------
def test_9_ctrl_c_during_export_says_what_was_kept(tmp_path, run_cli, monkeypatch):
    import edgekd.export.api as api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "export_model", interrupted)
    code, err = run_cli(["export", str(tmp_path), "--format", "onnx"])
    assert code == 130 and "epoch" not in err and "--resume" not in err
    assert "export" in err and "intact" in err


# 10 -----------------------------------------------------------------------------------------------
def test_10_help_and_recipe_errors_do_not_import_torch(tmp_path):
    bad = _write(tmp_path / "bad.yaml", {"trian": {}})
    code = (
        "import sys\nfrom edgekd.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    for args in (["--help"], ["train", str(bad)], ["targets"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert "HEAVY []" in out.stdout, (args, out.stdout[-300:], out.stderr[-300:])


# 11 -----------------------------------------------------------------------------------------------
def test_11_artifacts_are_written_with_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    f = atomic_write_text(tmp_path / "a.json", "{}")
    g = atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert f.stat().st_mode & 0o777 == 0o666 & ~umask
    assert g.stat().st_mode & 0o777 == 0o666 & ~umask
    from edgekd.atomic import atomic_directory

    with atomic_directory(tmp_path / "d") as d:
        (d / "x").write_text("1")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask


def test_11_commands_mentioned_in_help_and_targets_exist():
    from click.testing import CliRunner

    from edgekd.cli import cli

    commands = set(cli.commands)
    texts = [CliRunner().invoke(cli, ["--help"]).output]
    texts += [p.read_text() for p in (REPO / "targets").glob("*.yaml")]
    for text in texts:
        for name in re.findall(r"\bedgekd ([a-z][a-z-]*)\b", text):
            assert name in commands or name in {"run", "targets"}, (
                f"`edgekd {name}` is mentioned but does not exist"
            )


def test_11_litert_does_not_print_its_delegate_banner(tmp_path):
    from edgekd.graph.sample_models import sample_models

    model = sample_models(["mlp"])["mlp"]
    code = (
        "import sys\nfrom edgekd.runtimes import LiteRTRuntime\n"
        f"r = LiteRTRuntime({str(model)!r})\nr.load()\nprint('loaded', r.input_shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr[-500:]
    assert "XNNPACK" not in out.stderr and "INFO:" not in out.stderr, out.stderr[-500:]
