"""Issue 19 (security round 2), items 6, 7 and 8: resource bombs, terminal escaping, one line and exit 2.

Each test builds its hostile input itself (an alias-bomb recipe, a FIFO named model.pt, a zip-bomb npz, a
checkpoint whose kwargs ask for 14 GB, an ONNX node named ``[/]``, a TFLite custom op with escape
sequences, bad labels, a full disk, a serial device sending garbage numbers or time going backwards) and
checks exit code 2, one line on stderr naming the file and key, and that nothing was written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _checks import one_line_error
from _checks import tree as _tree
from _checks import write_yaml as _write

from edgekd.errors import EdgekdError


def _one_line_error(code: int, err: str, *parts: str) -> None:
    one_line_error(code, err, *parts, no_escapes=True)


def _recipe(**over) -> dict:
    base = {
        "name": "r",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
        "train": {"epochs": 1, "batch_size": 128},
    }
    base.update(over)
    return base


KW = {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [4]}


def _tiny_model(path: Path) -> Path:
    from edgekd.models import build_model, save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, build_model("mlp", **KW), "mlp", KW)
    return path


def _tiny_onnx(path: Path, node_name: str = "act", op: str = "Relu") -> Path:
    """A 4 -> 8 MatMul + ``op`` ONNX model with its second node named ``node_name``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["h"], name="mm"),
        helper.make_node(op, ["h"], ["output"], name=node_name),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# 6. resource exhaustion ---------------------------------------------------------------------------------
def _alias_bomb(levels: int = 9) -> str:
    """The 'billion laughs' YAML: 9 levels of 9 aliases expand to 9**9 (387 million) items."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["data.options", "model.kwargs"])
def test_6_a_yaml_alias_bomb_recipe_is_refused_at_once(tmp_path, run_cli, where):
    bomb = _alias_bomb()
    section = (
        "data: {name: digits, options: {x: *l8}}"
        if where == "data.options"
        else "model: {name: mlp, kwargs: {x: *l8}}"
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(f"{bomb}\nname: r\n{section}\ntrain: {{epochs: 1}}\n")
    assert path.stat().st_size < 1000  # a 700-byte file
    t0 = time.perf_counter()
    code, err = run_cli(["train", str(path), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert time.perf_counter() - t0 < 5
    _one_line_error(code, err, str(path), "aliases", "over the limit of 100,000 nodes")
    assert not (tmp_path / "runs").exists()


def test_6_a_self_referencing_yaml_and_a_board_file_bomb_are_refused(tmp_path, run_cli):
    from edgekd.yamlio import MAX_YAML_NODES, read_yaml_file

    loop = tmp_path / "loop.yaml"
    loop.write_text("name: r\nmodel: &m {name: mlp, kwargs: {inner: *m}}\n")
    code, err = run_cli(["train", str(loop), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(loop), "refers to itself")
    board = tmp_path / "board.yaml"
    board.write_text(_alias_bomb() + "\nname: b\nkind: mcu\nnotes: *l8\n")
    with pytest.raises(EdgekdError, match="board.yaml: this target profile expands to"):
        read_yaml_file(board, "target profile")
    code, err = run_cli(["export", str(_tiny_model(tmp_path / "m.pt")), "--target", str(board), "--quiet"])
    _one_line_error(code, err, str(board), "aliases")
    # ordinary aliases (a shared list) stay allowed
    ok = tmp_path / "ok.yaml"
    ok.write_text("hidden: &h [8, 8]\na: *h\nb: *h\n")
    assert read_yaml_file(ok) == {"hidden": [8, 8], "a": [8, 8], "b": [8, 8]}
    assert MAX_YAML_NODES >= 10_000


@contextlib.contextmanager
def _unblock(fifo: Path, after_s: float = 20.0) -> Iterator[threading.Event]:
    """If the code under test opens ``fifo`` and blocks, open its other end after ``after_s`` so the test
    fails (the event is set) instead of hanging the suite."""
    fired, stop = threading.Event(), threading.Event()

    def watch() -> None:
        if stop.wait(after_s):
            return
        fired.set()
        while not stop.wait(0.2):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield fired
    finally:
        stop.set()
        t.join()


def test_6_a_fifo_named_model_pt_is_refused_by_profile_and_export(tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "model.pt")
    os.mkfifo(tmp_path / "model.pt")
    cases = [
        (["profile", str(run)], run / "model.pt"),
        (["export", str(run), "--format", "onnx", "--quiet"], run / "model.pt"),
        (["profile", str(tmp_path / "model.pt")], tmp_path / "model.pt"),
        (["export", str(tmp_path / "model.pt"), "--format", "onnx", "--quiet"], tmp_path / "model.pt"),
    ]
    for argv, fifo in cases:
        with _unblock(fifo) as fired:
            code, err = run_cli(argv)
        assert not fired.is_set(), f"{argv} blocked on the FIFO"
        _one_line_error(code, err, str(fifo), "not a regular file")
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]  # nothing written beside it


def test_6_a_fifo_recipe_is_refused(tmp_path, run_cli):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    with _unblock(fifo) as fired:
        code, err = run_cli(["train", str(fifo), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert not fired.is_set()
    _one_line_error(code, err, str(fifo), "not a regular file")


def _zip_bomb(path: Path, mib: int = 400) -> Path:
    """An npz whose ``x`` is ``mib`` MiB of zeros (float32, (N, 1, 8, 8)) compressed to a few hundred KB,
    streamed into the zip so the test never holds it in memory."""
    from numpy.lib import format as npy

    rows = mib * 2**20 // (64 * 4)
    chunk = bytes(8 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, 1, 8, 8)})
            left = rows * 64 * 4
            while left:
                f.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        with zf.open("y.npy", "w") as f:
            npy.write_array(f, np.zeros(rows % 1000, np.int64))
    return path


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    return _zip_bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz")


def test_6_a_zip_bomb_npz_is_refused_from_its_headers(tmp_path, run_cli, zip_bomb):
    from edgekd.files import MAX_EVAL_NPZ_BYTES, load_npz

    assert zip_bomb.stat().st_size < 3 * 2**20  # 400 MiB inside
    model = _tiny_model(tmp_path / "m.pt")
    code, err = run_cli(["profile", str(model), "--data", str(zip_bomb), "--runs", "2"])
    _one_line_error(code, err, str(zip_bomb), "array 'x'", "400.0 MiB uncompressed", "256 MiB limit")
    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        with pytest.raises(EdgekdError, match="over the 256 MiB limit"):
            load_npz(zip_bomb, MAX_EVAL_NPZ_BYTES, "evaluation data")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB allocated before the refusal"


def test_6_the_data_set_cap_and_lying_or_pickled_headers(tmp_path, run_cli, zip_bomb, monkeypatch):
    import edgekd.data.loaders as loaders

    monkeypatch.setattr(loaders, "MAX_NPZ_BYTES", 64 * 2**20)  # the 4 GiB data-set cap, scaled down
    rec = _write(tmp_path / "r.yaml", _recipe(data={"name": "npz", "options": {"path": str(zip_bomb)}}))
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(zip_bomb), "64 MiB limit for an npz data set")
    assert not (tmp_path / "runs").exists()
    # a header that claims 4 GB in a 16-byte member
    import io

    from numpy.lib import format as npy

    liar, header = tmp_path / "liar.npz", io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (999999999,)})
    with zipfile.ZipFile(liar, "w") as zf:
        zf.writestr("x.npy", header.getvalue() + bytes(16))
        with zf.open("y.npy", "w") as f:
            npy.write_array(f, np.zeros(4, np.int64))
    rec = _write(tmp_path / "l.yaml", _recipe(data={"name": "npz", "options": {"path": str(liar)}}))
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(liar), "array 'x' claims shape (999999999,)", "file is corrupt")
    # object arrays would be pickles: refused from the header
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, x=np.zeros((2, 4), np.float32), y=np.array([{"a": 1}, None], dtype=object))
    code, err = run_cli(["profile", str(_tiny_model(tmp_path / "m.pt")), "--data", str(pickled)])
    _one_line_error(code, err, str(pickled), "array 'y' holds Python objects")


def _bomb_checkpoint(path: Path) -> Path:
    """A real tiny model.pt whose kwargs were edited to ask for two 60,000-unit layers (14 GB)."""
    _tiny_model(path)
    obj = torch.load(path, weights_only=True)
    obj["kwargs"]["hidden"] = [60000, 60000]
    torch.save(obj, path)
    return path


def test_6_checkpoint_kwargs_cannot_allocate_a_huge_model(tmp_path, run_cli, monkeypatch):
    import edgekd.models.checkpoint as ck

    real_build = ck.build_model
    devices = []

    def build_on_meta_only(name, **kwargs):
        device = torch.empty(0).device.type
        devices.append(device)
        if kwargs.get("hidden") == [60000, 60000] and device != "meta":
            raise AssertionError("the 14 GB model was built for real")
        return real_build(name, **kwargs)

    monkeypatch.setattr(ck, "build_model", build_on_meta_only)
    bomb = _bomb_checkpoint(tmp_path / "run" / "model.pt")
    for argv in (["profile", str(bomb)], ["export", str(bomb), "--format", "onnx", "--quiet"],
                 ["profile", str(bomb.parent)]):  # fmt: skip
        code, err = run_cli(argv)
        _one_line_error(code, err, str(bomb), "key 'kwargs'", "kwargs.hidden[0] = 60,000", "3,604,560,010 values",
                        "holds 310 weights", "--trust-model-code")  # fmt: skip
    assert devices and set(devices) == {"meta"}
    model, record = ck.load_model(_tiny_model(tmp_path / "ok.pt"))  # an honest file still loads
    assert record["kwargs"]["hidden"] == [4] and devices[-2:] == ["meta", "cpu"]
    assert sum(p.numel() for p in model.parameters()) == 310


def test_6_a_checkpoint_over_the_size_cap_is_refused_without_reading_it(tmp_path, run_cli):
    big = tmp_path / "big.pt"
    with open(big, "wb") as f:  # sparse: 3 GiB on paper, nothing on disk
        f.truncate(3 * 2**30)
    code, err = run_cli(["profile", str(big)])
    _one_line_error(code, err, str(big), "3072.0 MiB is over the 2048 MiB limit")


# 7. terminal and markup ----------------------------------------------------------------------------------
def test_7_an_onnx_node_named_like_rich_markup_prints_as_text(tmp_path, run_cli, monkeypatch):
    from edgekd.export import tflite as tfl

    def stop(*args, **kwargs):  # the conversion itself is not what this test is about
        raise EdgekdError("converter stopped by the test")

    monkeypatch.setattr(tfl, "convert", stop)
    src = _tiny_onnx(tmp_path / "m.onnx", node_name="[/]\x1b]0;pwned\x07", op="HardSigmoid")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32))
    code, err = run_cli(["export", str(src), "--target", "tflite-micro", "--calibration", str(calib),
                         "-o", str(tmp_path / "out")])  # fmt: skip
    assert code == 2 and "Traceback" not in err and "MarkupError" not in err, err
    assert "\x1b" not in err and "\x07" not in err
    flat = " ".join(err.split())  # rich wraps long progress lines
    assert "lowered for TFLite Micro: HardSigmoid '[/]\\x1b]0;pwned\\x07'" in flat, err
    assert err.splitlines()[-1].startswith(f"error: {src}: conversion to TFLite failed")
    assert not (tmp_path / "out").exists()


def _custom_op_tflite(path: Path, code: str) -> Path:
    """A one-operator float TFLite model whose operator is CUSTOM with ``custom_code=code``."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    m = s.ModelT()
    m.version = 3
    m.buffers = [s.BufferT()]
    oc = s.OperatorCodeT()
    oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    oc.customCode, oc.version = code, 1
    m.operatorCodes = [oc]
    g = s.SubGraphT()
    g.tensors = []
    for name in ("input", "output"):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, 4], s.TensorType.FLOAT32, 0, name
        g.tensors.append(t)
    g.inputs, g.outputs = [0], [1]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    g.operators = [op]
    m.subgraphs = [g]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


EVIL_OP = "EVIL\x1b]0;pwned\x07\x1b[2J\x9b31m[/]"


def test_7_escape_sequences_in_a_custom_op_name_never_reach_the_terminal(tmp_path, run_cli, capsys):
    evil = _custom_op_tflite(tmp_path / "evil.tflite", EVIL_OP)
    code, err = run_cli(["profile", str(evil)])
    _one_line_error(code, err, str(evil), "custom op: EVIL\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m[/]")
    # beside a good model the failure goes to the rich table and its error lines: escaped there too
    from edgekd.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["profile", str(evil), str(_tiny_model(tmp_path / "m.pt")), "--runs", "2"])
    out, err = capsys.readouterr()
    assert ei.value.code == 1 and "Traceback" not in err and "MarkupError" not in out + err
    assert not set("\x1b\x07\x9b") & set(out + err)
    assert "EVIL\\x1b]0;pwned\\x07" in " ".join(out.split())


def test_7_the_cli_error_line_and_the_helpers(run_cli, monkeypatch):
    from edgekd.safetext import markup, plain

    assert plain("a\x1b[31mb\nc\u202ed") == "a\\x1b[31mb c\\u202ed"
    assert plain("ok, naïve ✓") == "ok, naïve ✓"
    assert markup("[/] [bold]x") == "\\[/] \\[bold]x"

    def boom(*a, **k):
        raise EdgekdError("board.yaml: name 'x\x1b]0;t\x07' is bad\nsecond line")

    monkeypatch.setattr("edgekd.targets.list_targets", boom)
    code, err = run_cli(["targets"])
    _one_line_error(code, err, "name 'x\\x1b]0;t\\x07' is bad second line")


# 8. one line and exit 2 instead of a traceback ---------------------------------------------------------
def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


X6 = np.zeros((6, 1, 8, 8), np.float32)


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.zeros(0, np.int64), "array 'y' is empty"),
        (np.array([0, 1, -3, 0, 1, 2]), "array 'y' holds the negative label -3"),
        (np.array(list("abcabc")), "array 'y' has dtype <U1; expected integer class labels"),
        (np.array([0, 1, 2.5, 0, 1, 2]), "array 'y' holds non-integer values"),
    ],
)  # fmt: skip
def test_8_bad_labels_in_an_npz_give_one_line(tmp_path, run_cli, y, message):
    data = _npz(tmp_path / "d.npz", x=X6, y=y)
    rec = _write(tmp_path / "r.yaml", _recipe(data={"name": "npz", "options": {"path": str(data)}}))
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(data), message)
    assert not (tmp_path / "runs").exists()
    code, err = run_cli(["profile", str(_tiny_model(tmp_path / "m.pt")), "--data", str(data)])
    _one_line_error(code, err, str(data), message)


def test_8_labels_beyond_the_class_names_and_a_truncated_zip(tmp_path, run_cli):
    data = _npz(tmp_path / "d.npz", x=X6, y=np.array([0, 1, 2, 0, 1, 2]))
    rec = _write(tmp_path / "r.yaml", _recipe(data={"name": "npz", "options": {"path": str(data),
                                                                               "class_names": ["a", "b"]}}))  # fmt: skip
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(data), "holds label 2 but there are 2 classes")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    rec = _write(tmp_path / "c.yaml", _recipe(data={"name": "npz", "options": {"path": str(cut)}}))
    for argv in (["train", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"],
                 ["profile", str(_tiny_model(tmp_path / "m.pt")), "--data", str(cut)]):  # fmt: skip
        code, err = run_cli(argv)
        _one_line_error(code, err, str(cut), "cannot read npz", "truncated")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (["data.options={bogus: 1}"], "unknown key 'data.options.bogus' for data set 'digits'; 'digits' takes no options"),
        (["data.name=npz", "data.options={path: x.npz, scle: 2}"],
         "unknown key 'data.options.scle' for data set 'npz'; valid keys here: path, scale, class_names"),
        (["data.name=npz"], "data set 'npz' needs key 'data.options.path'"),
        (["train.momentum=-1"], "key 'train.momentum' must be in [0, 1)"),
        (["train.momentum=1"], "key 'train.momentum' must be in [0, 1)"),
        (["train.weight_decay=-1"], "key 'train.weight_decay' must be a finite number >= 0"),
        (["seed=-1"], "key 'seed' must be an integer in [0, 2**63)"),
        (["data.split_seed=-5"], "key 'data.split_seed' must be an integer in [0, 2**63)"),
        (["stages=[{epochs: 1, train: {momentum: -0.5}}]"], "key 'stages[0].train.momentum' must be in [0, 1)"),
    ],
)  # fmt: skip
def test_8_recipe_values_are_checked_before_the_run_folder_exists(tmp_path, run_cli, over, message):
    rec = _write(tmp_path / "r.yaml", _recipe())
    runs = tmp_path / "runs"
    args = [a for o in over for a in ("--set", o)]
    for cmd in ("train", "distill", "run"):
        code, err = run_cli([cmd, str(rec), "--runs-dir", str(runs), "-q", *args])
        _one_line_error(code, err, str(rec), message)
        assert not runs.exists()  # a retry is not refused as "holds an interrupted run"


def _full_disk_on(monkeypatch, pattern: str, after: int = 0) -> list[str]:
    """Make ``fsync`` fail with ENOSPC for files whose temp name contains ``pattern`` (after ``after`` good
    writes of them): what a full disk does to the atomic writer. Returns the paths refused."""
    import edgekd.atomic as atomic

    real = os.fsync
    seen: list[str] = []
    refused: list[str] = []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if pattern in name:
            seen.append(name)
            if len(seen) > after:
                refused.append(name)
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    return refused


def test_8_a_full_disk_during_training_is_one_line_and_resume_works(tmp_path, run_cli, monkeypatch):
    rec = _write(tmp_path / "r.yaml", _recipe(train={"epochs": 2, "batch_size": 256}))
    runs = tmp_path / "runs"
    refused = _full_disk_on(monkeypatch, ".checkpoint.pt.", after=1)  # epoch 1 saved, epoch 2 not
    code, err = run_cli(["train", str(rec), "--runs-dir", str(runs), "-q"])
    assert refused
    _one_line_error(code, err, f"disk full while writing {runs / 'r' / 'checkpoint.pt'}; free space",
                    "continue with --resume")  # fmt: skip
    assert not any(p.name.endswith(".tmp") for p in (runs / "r").iterdir())
    monkeypatch.undo()
    code, err = run_cli(["train", str(rec), "--runs-dir", str(runs), "-q", "--resume"])
    assert code == 0, err
    assert (runs / "r" / "model.pt").is_file()


def test_8_a_full_disk_during_export_is_one_line_and_the_old_export_stays(tmp_path, run_cli, monkeypatch):
    src = _tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_text("the previous export")
    (out / "export.json").write_text('{"edgekd_export": 1}')
    before = _tree(tmp_path)
    _full_disk_on(monkeypatch, "export.json")
    code, err = run_cli(["export", str(src), "--format", "onnx", "-o", str(out), "--quiet"])
    _one_line_error(code, err, f"disk full while writing {out / 'export.json'}; free space",
                    "the previous export is intact")  # fmt: skip
    assert _tree(tmp_path) == before


class _ScriptedSerial:
    """A fake serial port: each command written gets the scripted reply lines (then ``m-ready``)."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies, self.buf = replies, bytearray()

    @property
    def in_waiting(self) -> int:
        return len(self.buf)

    def read(self, n: int) -> bytes:
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def write(self, b: bytes) -> int:
        cmd = b.decode().rstrip("%")
        key = next((k for k in self.replies if cmd.startswith(k)), None)
        lines = self.replies[key] if key is not None else [f"e-[Unknown command: {cmd}]"]
        self.buf += "".join(f"{ln}\r\n" for ln in [*lines, "m-ready"]).encode()
        return len(b)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _fake_device(laps: list[str]) -> object:
    from edgekd.harness.runner import Device

    dev = Device("fake://", timeout=0.5)
    dev._ser = _ScriptedSerial({
        "db load": ["m-[Expecting 4 bytes]"],
        "db ": ["m-load-done"],
        "infer": ["m-warmup-start-1", "m-warmup-done", "m-infer-start-1", *laps, "m-infer-done", "m-results-[1,2]"],
    })  # fmt: skip
    return dev


def test_8_serial_numbers_are_bounded_and_time_never_goes_backwards():
    from edgekd.harness import protocol as p
    from edgekd.harness.runner import run_performance

    with pytest.raises(p.ProtocolError, match="device sent a 5,000-digit number in 'm-lap-us-9"):
        p.parse_line("m-lap-us-" + "9" * 5000)
    with pytest.raises(p.ProtocolError, match="5,000-character number in its results line"):
        p.parse_line("m-results-[" + "1" * 5000 + "]")
    assert p.parse_line("m-lap-us-" + "9" * 20).value == 10**20 - 1
    t0 = time.monotonic()
    with pytest.raises(EdgekdError, match="5,000-digit number") as ei:
        run_performance(_fake_device(["m-lap-us-1000", "m-lap-us-" + "7" * 5000]), b"\x00" * 4, windows=1)
    assert "\n" not in str(ei.value)
    good = run_performance(_fake_device(["m-lap-us-1000", "m-lap-us-3000"]), b"\x00" * 4, windows=2)
    assert good["us_per_inference"] > 0 and good["inferences_per_second"] < 1e6
    with pytest.raises(
        p.ProtocolError, match=r"timestamps went backwards \(m-lap-us-5000 then m-lap-us-10\)"
    ):
        run_performance(_fake_device(["m-lap-us-5000", "m-lap-us-10"]), b"\x00" * 4, windows=1)
    assert time.monotonic() - t0 < 10
