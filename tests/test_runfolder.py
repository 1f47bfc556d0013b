"""edgekd.runfolder: what a run folder holds, the one claim rule, moving a run aside, run paths."""

from __future__ import annotations

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.runfolder import CHAIN_RUNS, LOCK_FILE, RunFolder, RunState, checkpoint_epoch


def _checkpoint(run: RunFolder, epoch: int) -> None:
    run.ensure()
    torch.save({"format": "edgekd-checkpoint/2", "epoch": epoch, "distillers": [{"w": torch.zeros(4)}]},
               run.checkpoint)  # fmt: skip


def test_state_reads_the_checkpoint_epoch_and_ignores_the_lock_and_kept_runs(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert run.state() == RunState("empty")
    run.ensure()
    (run.root / LOCK_FILE).write_text("")
    (run.root / "teacher").mkdir()
    assert run.state(keep=CHAIN_RUNS) == RunState("empty")
    assert run.state().holds == "partial"  # the whole folder: teacher/ is part of the run
    _checkpoint(run, 2)
    assert checkpoint_epoch(run.checkpoint) == 2
    assert run.state(epochs=3) == RunState("partial", 2)
    run.model.write_bytes(b"a final network")
    assert run.state(epochs=3) == RunState("partial", 2)  # short of the recipe's epochs: resumable
    assert run.state(epochs=2) == RunState("finished", 2)
    run.checkpoint.write_bytes(b"not a checkpoint")
    assert run.state(epochs=2) == RunState("partial", -1)


def test_claim_is_the_one_rule_for_a_folder_that_holds_a_run(tmp_path):
    run = RunFolder(tmp_path / "r")
    with pytest.raises(EdgekdError, match="exclude each other"):
        run.claim(resume=True, overwrite=True)
    with pytest.raises(EdgekdError, match="nothing to resume"):
        run.claim(resume=True, overwrite=False)
    assert run.claim(resume=True, overwrite=False, resume_may_start=True).state == RunState("empty")
    _checkpoint(run, 1)
    with pytest.raises(
        EdgekdError, match=r"holds an interrupted run \(checkpointed at epoch 1\); pass --resume"
    ):
        run.claim(resume=False, overwrite=False, epochs=3)
    assert run.claim(resume=True, overwrite=False, epochs=3).state == RunState("partial", 1)
    claim = run.claim(resume=False, overwrite=True, epochs=3)
    with claim.hold() as moved:
        assert moved is not None and moved.name.startswith("r.old-") and (moved / "checkpoint.pt").exists()
        assert run.state() == RunState("empty")
    assert run.lock_file.exists() and not run.checkpoint.exists()


def test_a_claim_refuses_a_folder_that_changed_before_it_was_held(tmp_path):
    run = RunFolder(tmp_path / "r")
    claim = run.claim(resume=False, overwrite=False)
    _checkpoint(run, 1)  # another writer, between the check and the lock
    with pytest.raises(EdgekdError, match="changed while this run was being prepared"), claim.hold():
        pass


def test_run_paths_resolve_in_the_runs_folder(tmp_path):
    assert RunFolder.named(tmp_path, "r").root == tmp_path / "r"
    assert RunFolder.named(tmp_path, "r", run_dir=tmp_path / "x").root == tmp_path / "x"
    run = RunFolder(tmp_path / "t").ensure()
    run.model.write_bytes(b"weights")
    for ref in ("t", "runs/t", str(run.root)):
        assert RunFolder.resolve_model(ref, tmp_path) == run.model
    with pytest.raises(EdgekdError, match=r"teacher.path='nope': no such run folder or checkpoint"):
        RunFolder.resolve_model("nope", tmp_path)
