"""Every CLI command over a corpus of corrupt inputs (issue 8, item 7).

Truncated, random bytes, empty and wrong-format files in every place a command reads one: exit code 2,
exactly one line on stderr that names the file, no traceback, and nothing changed on disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekd.distill.runner import run_training
from edgekd.recipe import recipe_from_dict


def _onnx_bytes() -> bytes:
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], np.ones(640, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _variants(valid: bytes, wrong: bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    return {
        "truncated": valid[: len(valid) // 2],
        "random": rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "empty": b"",
        "wrong-format": wrong,
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    runs = root / "runs"
    r = recipe_from_dict({"name": "good", "data": {"name": "digits"}, "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
                          "train": {"epochs": 1, "batch_size": 128}})  # fmt: skip
    run = run_training(r, runs, distill=False, progress=False).root
    pt = (run / "model.pt").read_bytes()
    onnx_b = _onnx_bytes()
    tflite = b"\x1c\x00\x00\x00TFL3" + bytes(range(200))  # identifier present, body cut off
    buf_path = root / "calib.npz"
    np.savez(buf_path, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    npz = buf_path.read_bytes()
    recipe = yaml.safe_dump({"name": "x", "data": {"name": "digits"}, "train": {"epochs": 1}}).encode()
    files: dict[str, dict[str, Path]] = {}
    for kind, (valid, wrong, suffix) in {
        "pt": (pt, recipe, ".pt"),
        "onnx": (onnx_b, pt, ".onnx"),
        "tflite": (tflite, onnx_b, ".tflite"),
        "npz": (npz, pt, ".npz"),
        "yaml": (b"name: [x\n  data: {", pt, ".yaml"),
    }.items():
        files[kind] = {}
        for variant, data in _variants(valid, wrong).items():
            p = root / "bad" / f"{variant}{suffix}"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(data)
            files[kind][variant] = p
        if kind == "yaml":  # half a recipe is still YAML; a truncated recipe cuts a line in two
            files[kind]["truncated"].write_bytes(recipe[: len(recipe) // 2 + 3])
    return {"root": root, "run": run, "files": files}


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def _cases(c: dict) -> list[tuple[str, list[str], Path]]:
    """(case id, argv, the corrupt file the message must name)."""
    root, run, files = c["root"], c["run"], c["files"]
    out = []
    for variant in ("truncated", "random", "empty", "wrong-format"):
        rec = files["yaml"][variant]
        pt, onnx_f, tfl, npz = (files[k][variant] for k in ("pt", "onnx", "tflite", "npz"))
        teacher_rec = root / "recipes" / f"teacher-{variant}.yaml"
        teacher_rec.parent.mkdir(exist_ok=True)
        teacher_rec.write_text(yaml.safe_dump({"name": f"d-{variant}", "data": {"name": "digits"},
                                               "teacher": {"path": str(pt)}, "method": {"name": "kd"}}))  # fmt: skip
        out += [
            (f"train-recipe-{variant}", ["train", str(rec), "--runs-dir", str(root / "new")], rec),
            (f"distill-recipe-{variant}", ["distill", str(rec), "--runs-dir", str(root / "new")], rec),
            (f"run-recipe-{variant}", ["run", str(rec), "--runs-dir", str(root / "new")], rec),
            (
                f"distill-teacher-{variant}",
                ["distill", str(teacher_rec), "--runs-dir", str(root / "new")],
                pt,
            ),
            (f"export-pt-{variant}", ["export", str(pt), "--format", "onnx", "-o", str(root / "out")], pt),
            (
                f"export-onnx-{variant}",
                ["export", str(onnx_f), "--target", "tflite-micro", "-o", str(root / "out")],
                onnx_f,
            ),
            (
                f"export-calibration-{variant}",
                [
                    "export",
                    str(run),
                    "--format",
                    "tflite",
                    "--quant",
                    "int8",
                    "--calibration",
                    str(npz),
                    "-o",
                    str(root / "out"),
                ],
                npz,
            ),  # fmt: skip
            (
                f"export-target-{variant}",
                ["export", str(run), "--target", str(rec), "-o", str(root / "out")],
                rec,
            ),
            (f"profile-pt-{variant}", ["profile", str(pt), "--data", "digits", "--runs", "1"], pt),
            (f"profile-onnx-{variant}", ["profile", str(onnx_f), "--data", "digits", "--runs", "1"], onnx_f),
            (f"profile-tflite-{variant}", ["profile", str(tfl), "--data", "digits", "--runs", "1"], tfl),
        ]
    return out


def _check(code: int, err: str, named: Path, case: str) -> None:
    assert code == 2, f"{case}: exit {code}: {err[-400:]}"
    assert len(err.splitlines()) == 1, f"{case}: {err[-600:]}"
    assert "Traceback" not in err and err.startswith("error: "), f"{case}: {err}"
    assert str(named) in err, f"{case}: the message does not name {named}: {err}"


def test_every_command_over_the_corrupt_corpus(corpus, run_cli):
    cases = _cases(corpus)
    before = _snapshot(corpus["root"])
    failures = []
    for case, argv, named in cases:
        code, err = run_cli(argv)
        try:
            _check(code, err, named, case)
        except AssertionError as e:
            failures.append(str(e))
        after = _snapshot(corpus["root"])
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))[:3]
            failures.append(f"{case}: changed files on disk: {changed}")
            shutil.rmtree(corpus["root"] / "new", ignore_errors=True)
            shutil.rmtree(corpus["root"] / "out", ignore_errors=True)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("variant", ["truncated", "random", "empty", "wrong-format"])
def test_corrupt_files_inside_a_run_folder(corpus, run_cli, variant, tmp_path):
    """A run's own student.pt (export, profile) and checkpoint.pt (resume) turned corrupt."""
    run = tmp_path / "good"
    shutil.copytree(corpus["run"], run)
    bad = corpus["files"]["pt"][variant].read_bytes()
    (run / "model.pt").write_bytes(bad)
    before = _snapshot(tmp_path)
    for argv in (["export", str(run), "--format", "onnx"], ["profile", str(run), "--runs", "1"]):
        code, err = run_cli(argv)
        _check(code, err, run / "model.pt", " ".join(argv[:1]) + f" {variant}")
        assert _snapshot(tmp_path) == before
    shutil.copytree(corpus["run"], run, dirs_exist_ok=True)
    (run / "model.pt").unlink()
    (run / "checkpoint.pt").write_bytes(bad)
    recipe = run / "recipe.yaml"
    before = _snapshot(tmp_path)
    code, err = run_cli(["train", str(recipe), "--runs-dir", str(tmp_path), "--resume", "-q"])
    _check(code, err, run / "checkpoint.pt", f"resume {variant}")
    assert _snapshot(tmp_path) == before


def test_a_corrupt_board_file_is_named_by_edgekd_targets(tmp_path, run_cli, monkeypatch):
    (tmp_path / "broken.yaml").write_bytes(os.urandom(300))
    monkeypatch.setenv("EDGEKD_TARGETS_DIR", str(tmp_path))
    code, err = run_cli(["targets"])
    _check(code, err, tmp_path / "broken.yaml", "targets")
