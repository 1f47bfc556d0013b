"""Issue 19 (security round 2): code named by a recipe, names that become paths, run-folder locking.

Each test builds its hostile input itself (a hubconf.py, a networks.json, a board file, a recipe, a
process holding the lock) and checks exit code 2, one line on stderr naming the file and key, and that
nothing outside the run folder changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from _checks import one_line_error as _one_line_error
from _checks import tree as _tree
from _checks import write_yaml as _write

from edgekd.errors import EdgekdError

REPO = Path(__file__).resolve().parent.parent


def _recipe(**over) -> dict:
    base = {
        "name": "r",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
        "train": {"epochs": 1, "batch_size": 128},
    }
    base.update(over)
    return base


def _tiny_run(root: Path) -> Path:
    """A run folder with a tiny trained-looking ``model.pt`` (digits shape)."""
    from edgekd.models import build_model, save_model

    kw = {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [4]}
    root.mkdir(parents=True)
    save_model(root / "model.pt", build_model("mlp", **kw), "mlp", kw)
    return root


# 1. code from a recipe ------------------------------------------------------------------------------
def _hub_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A torch.hub 'local' repo whose hubconf.py leaves a marker when it is imported."""
    repo, marker = tmp_path / "hub", tmp_path / "pwned"
    repo.mkdir()
    (repo / "hubconf.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndependencies = []\n\n"
        "def net(**kwargs):\n    import torch\n    return torch.nn.Identity()\n"
    )
    return repo, marker


HUB = "torch.hub:load"


@pytest.mark.parametrize(
    "command, over, key",
    [
        ("train", {"model": "HUB"}, "model.name"),
        ("run", {"teacher": {"model": "HUB"}}, "teacher.model.name"),
        ("train", {"model": {"name": "ensemble", "kwargs": {"members": ["HUB"]}}}, "model.kwargs.members[0].name"),
    ],
)  # fmt: skip
def test_1_a_recipe_naming_code_is_refused_without_the_flag(tmp_path, run_cli, command, over, key):
    repo, marker = _hub_repo(tmp_path)
    hub = {"name": HUB, "kwargs": {"repo_or_dir": str(repo), "model": "net", "source": "local"}}
    rec = _recipe()
    for k, v in over.items():  # put the hub model where the case says
        rec[k] = json.loads(json.dumps(v).replace('"HUB"', json.dumps(hub)))
    path = _write(tmp_path / "downloaded.yaml", rec)
    before = _tree(tmp_path)
    code, err = run_cli([command, str(path), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(path), repr(key), "torch.hub", "--trust-model-code")
    assert not marker.exists()  # hubconf.py never ran
    assert _tree(tmp_path) == before  # no run folder


def _user_module(tmp_path: Path, monkeypatch) -> str:
    """An importable user model module (a fresh name per test, so the import really happens)."""
    name = f"usernet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import math
            import torch

            class Net(torch.nn.Module):
                def __init__(self, input_shape=(1, 8, 8), num_classes=10, hidden=None):
                    super().__init__()
                    self.fc = torch.nn.Linear(math.prod(input_shape), num_classes)

                def forward(self, x):
                    return self.fc(x.flatten(1))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}:Net"


def test_1_code_named_on_the_command_line_or_trusted_is_built(tmp_path, run_cli, monkeypatch):
    name = _user_module(tmp_path, monkeypatch)
    plain = _write(tmp_path / "plain.yaml", _recipe(name="typed"))
    runs = tmp_path / "runs"
    code, err = run_cli(["train", str(plain), "--runs-dir", str(runs), "-q", "--set", f"model.name={name}"])
    assert code == 0, err
    named = _write(tmp_path / "named.yaml", _recipe(name="trusted", model={"name": name}))
    code, err = run_cli(["train", str(named), "--runs-dir", str(runs), "-q"])
    _one_line_error(code, err, str(named), "'model.name'", name.partition(":")[0], "--trust-model-code")
    code, err = run_cli(["train", str(named), "--runs-dir", str(runs), "-q", "--trust-model-code"])
    assert code == 0, err
    for run in ("typed", "trusted"):
        saved = yaml.safe_load((runs / run / "recipe.yaml").read_text())
        assert saved["model"]["name"] == name


def test_1_only_the_key_typed_on_the_command_line_is_trusted(tmp_path):
    from edgekd.recipe import load_recipe

    path = _write(tmp_path / "r.yaml", _recipe(model={"name": "evil.mod:Net"}))
    with pytest.raises(EdgekdError, match=r"'model.name' names 'evil.mod:Net'.*--trust-model-code"):
        load_recipe(path, ["model.kwargs.hidden=[4]"])  # another key typed: the file's name is still data
    assert load_recipe(path, ["model={name: 'my.mod:Net'}"]).model.name == "my.mod:Net"
    # torch.hub's kwargs choose the code: typing the name alone does not trust the file's repo_or_dir
    hub = _write(
        tmp_path / "h.yaml", _recipe(model={"name": HUB, "kwargs": {"repo_or_dir": "/x", "model": "m"}})
    )
    with pytest.raises(EdgekdError, match=r"'model.name' names 'torch.hub:load'.*hubconf.py from '/x'"):
        load_recipe(hub, [f"model.name={HUB}"])
    typed = load_recipe(hub, [f"model.name={HUB}", "model.kwargs.repo_or_dir=/mine"])
    assert typed.model.kwargs["repo_or_dir"] == "/mine"


# 2. names in networks.json ---------------------------------------------------------------------------
def test_2_a_network_name_that_is_a_path_is_refused_before_export(tmp_path, run_cli):
    run = _tiny_run(tmp_path / "run")
    victim = tmp_path / "x"  # RUN/export/onnx-/../../../x is this folder
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    record = {"final": "model.pt", "networks": {"student": "model.pt", "/../../../x": "model.pt"}}
    (run / "networks.json").write_text(json.dumps(record))
    before = _tree(tmp_path)
    code, err = run_cli(["export", str(run), "--all-networks", "--format", "onnx", "--quiet"])
    _one_line_error(code, err, str(run / "networks.json"), "network name", "'/../../../x'")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", ["..", ".", "a/b", "", "x\ny"])
def test_2_list_networks_checks_every_name(tmp_path, name):
    from edgekd.networks import list_networks

    run = _tiny_run(tmp_path / "run")
    (run / "networks.json").write_text(json.dumps({"networks": {name: "model.pt"}}))
    with pytest.raises(EdgekdError, match=r"networks.json: network name .* is not a safe name"):
        list_networks(run)


def test_2_the_export_folder_of_a_target_stays_in_the_run_folder(tmp_path):
    from edgekd.runfolder import RunFolder

    run = RunFolder(tmp_path / "run")
    assert run.export_dir("tflite-micro") == run.root / "export" / "tflite-micro"
    for bad in ("..", ".", "../x", "/abs"):
        with pytest.raises(EdgekdError, match="target name .* is not a safe name"):
            run.export_dir(bad)


@pytest.mark.parametrize("all_networks", [False, True])
def test_2_an_export_link_in_a_run_folder_does_not_lead_out(tmp_path, run_cli, all_networks):
    """A downloaded run folder whose export/ is a link to a folder elsewhere: nothing is written there."""
    run = _tiny_run(tmp_path / "run")
    victim = tmp_path / "elsewhere"
    (victim / "onnx").mkdir(parents=True)
    (victim / "onnx" / "precious.txt").write_text("keep me")
    (run / "export").symlink_to(victim, target_is_directory=True)
    if all_networks:
        (run / "networks.json").write_text(json.dumps({"networks": {"student": "model.pt"}}))
    before = _tree(victim)
    args = ["export", str(run), "--format", "onnx", "--quiet"] + ["--all-networks"] * all_networks
    code, err = run_cli(args)
    _one_line_error(code, err, str(run), "'export'", "outside")
    assert _tree(victim) == before


# 5. names that are paths --------------------------------------------------------------------------------
BOARD = {"kind": "mcu", "cpu": "Cortex-M4", "clock_mhz": 64, "ram_kb": 256, "flash_kb": 1024,
         "runtime": "tflite-micro", "quantization": "int8"}  # fmt: skip


@pytest.mark.parametrize("name", [".", "..", "../boards", ""])
def test_5_a_board_named_like_a_folder_is_refused(tmp_path, run_cli, name):
    run = _tiny_run(tmp_path / "run")
    (run / "export" / "onnx").mkdir(parents=True)
    (run / "export" / "onnx" / "model.onnx").write_text("a previous export")
    board = _write(tmp_path / "board.yaml", {"name": name, **BOARD})
    before = _tree(tmp_path)
    code, err = run_cli(["export", str(run), "--target", str(board), "--quiet"])
    _one_line_error(code, err, str(board), "key 'name'", "not a safe name")
    assert _tree(tmp_path) == before  # the other exports are intact, no temp folder left


@pytest.mark.parametrize("name", ["..", ".", "a/../..", "/nonexistent-edgekd/x", ""])
def test_5_a_run_name_that_is_a_path_is_refused(tmp_path, run_cli, name):
    runs = tmp_path / "runs"
    (runs / "earlier").mkdir(parents=True)
    (runs / "earlier" / "model.pt").write_text("an earlier run")
    rec = _write(tmp_path / "r.yaml", _recipe(name=name))
    before = _tree(tmp_path)
    for cmd in ("train", "run"):
        code, err = run_cli([cmd, str(rec), "--runs-dir", str(runs), "-q", "--overwrite"])
        _one_line_error(code, err, str(rec), "key 'name'", "not a safe name")
    assert _tree(tmp_path) == before  # nothing moved aside, nothing written next to runs/


def test_5_a_stage_name_that_is_a_path_is_refused(tmp_path, run_cli):
    rec = _write(
        tmp_path / "r.yaml", _recipe(stages=[{"name": "ok", "epochs": 1}, {"name": "../x", "epochs": 1}])
    )
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(rec), "key 'stages[1].name'", "'../x'")
    assert not (tmp_path / "runs").exists()


def test_5_smd_machine_names_never_leave_the_data_folder(tmp_path, run_cli):
    from edgekd.data.smd import load_machine, load_smd

    root = tmp_path / "smd"
    for sub in ("train", "test", "test_label"):
        (root / sub).mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("1,2\n" * 80)  # <root>/train/../../secret.txt
    rec = _write(
        tmp_path / "r.yaml", _recipe(data={"name": "smd", "options": {"machines": ["../../secret"]}})
    )
    code, err = run_cli(["train", str(rec), "--runs-dir", str(tmp_path / "runs"), "-q"])
    _one_line_error(code, err, str(rec), "key 'data.options.machines[0]'", "not a safe name")
    # the same names read back from a run folder's data.json reach the loader itself
    with pytest.raises(EdgekdError, match=r"data.options.machines\[0\] '../../secret' is not a safe name"):
        load_smd(["../../secret"], root=str(root))
    with pytest.raises(EdgekdError, match="machine name '../../secret' is not a safe name"):
        load_machine("../../secret", root=root)


# 10b. one writer per run folder ------------------------------------------------------------------------
HOLD_LOCK = """
import sys
from edgekd.runfolder import RunFolder
with RunFolder(sys.argv[1]).lock():
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_10b_a_second_run_on_a_locked_folder_is_refused_at_once(tmp_path, run_cli):
    runs = tmp_path / "runs"
    rec = _write(tmp_path / "r.yaml", _recipe())
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(runs / "r")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(tmp_path)
        for cmd in ("train", "run"):
            code, err = run_cli([cmd, str(rec), "--runs-dir", str(runs), "-q"])
            _one_line_error(code, err, str(runs / "r"), "another edgekd process is writing")
        assert _tree(tmp_path) == before
    finally:
        holder.kill()  # like a crash: the OS drops the lock
        holder.wait(timeout=30)
    code, err = run_cli(["train", str(rec), "--runs-dir", str(runs), "-q"])
    assert code == 0, err
    assert (runs / "r" / "model.pt").exists()


def test_10b_export_profile_bench_refuse_a_folder_being_written(tmp_path, run_cli):
    """A train/distill still writing RUN: export, profile and bench of RUN stop at once, write nothing."""
    run = _tiny_run(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(tmp_path)
        for args in (["export", str(run), "--format", "onnx", "--quiet"], ["profile", str(run)],
                     ["bench", str(run), "--target", "tflite-micro", "--software", "-q"]):  # fmt: skip
            code, err = run_cli(args)
            _one_line_error(code, err, str(run), "another edgekd process is writing")
        assert _tree(tmp_path) == before
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_10b_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    import fcntl
    import os

    from edgekd.runfolder import RunFolder

    run = RunFolder(tmp_path / "run")
    with run.lock(), run.lock():  # `edgekd run` and its student's training share the folder
        run.check_unlocked()
    fd = os.open(run.lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(fd)
