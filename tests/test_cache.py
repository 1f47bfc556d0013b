"""edgekd.distill.cache: the teacher-output cache.

Teacher-output cache (issue 13): keyed by teacher weights + data + preprocessing, rebuilt when any changes
or the file is corrupt, and equal to running the teacher every step.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.distill.cache import TeacherCache, compute_outputs, make_key
from edgekd.distill.runner import run_training
from edgekd.models import load_model
from edgekd.recipe import recipe_from_dict

CNN_T = {"name": "cnn", "kwargs": {"channels": [8, 16], "depthwise": False}}
CNN_S = {"name": "cnn", "kwargs": {"channels": [4, 8], "depthwise": False}}
PREP = {"teacher_input": "x", "jitter": 0, "normalisation": [0.5, 0.25]}


def _teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(40, 3, 2, 2)).astype(np.float32)


def _cache(tmp_path, teacher, x, prep=PREP) -> tuple[TeacherCache, callable]:
    """The cache of ``teacher`` over ``x`` normalised on the fly with ``prep`` (the preprocessing)."""
    cache = TeacherCache(tmp_path, make_key(teacher, x, prep))
    mean, std = prep["normalisation"]
    xt = (torch.from_numpy(x) - mean) / std
    return cache, lambda: compute_outputs(teacher, xt, torch.device("cpu"), batch=16)


def test_cache_built_once_then_hit_with_the_teachers_outputs(tmp_path):
    t, x = _teacher(), _x()
    cache, compute = _cache(tmp_path, t, x)
    out = cache.get(compute)
    assert cache.events == ["built"] and cache.path.exists()
    expected = t((torch.from_numpy(x) - 0.5) / 0.25).detach()
    assert torch.allclose(out, expected, atol=1e-6)
    again, _ = _cache(tmp_path, t, x)
    calls = []
    got = again.get(lambda: calls.append(1) or compute())
    assert again.events == ["hit"] and not calls  # the teacher did not run
    assert torch.equal(got, out)


@pytest.mark.parametrize(
    "change, said",
    [
        ("weights", "teacher weights"),
        ("data", "training data"),
        ("preprocessing", "preprocessing"),
    ],
)
def test_a_cache_for_another_teacher_data_or_preprocessing_is_rebuilt_and_said(
    tmp_path, caplog, change, said
):
    t, x = _teacher(), _x()
    old, compute = _cache(tmp_path, t, x)
    old_out = old.get(compute)
    t2, x2, prep2 = t, x, PREP
    if change == "weights":
        t2 = _teacher(seed=1)
    elif change == "data":
        x2 = x.copy()
        x2[3, 0, 0, 0] += 1.0  # one value of one sample
    else:
        prep2 = {**PREP, "normalisation": [0.5, 0.3]}
    new, compute2 = _cache(tmp_path, t2, x2, prep2)
    assert new.path != old.path  # content-addressed: another key, another file
    # the worst case: the old file sits where the new key looks (copied, renamed, a hash collision)
    shutil.copyfile(old.path, new.path)
    with caplog.at_level(logging.WARNING, logger="edgekd.distill.cache"):
        out = new.get(compute2)
    assert new.events == [f"rebuilt: other {said}", "built"]
    assert f"made for other {said}" in caplog.text
    assert torch.allclose(out, compute2(), atol=0) and not torch.equal(out, old_out)
    third, _ = _cache(tmp_path, t2, x2, prep2)
    assert torch.equal(third.get(lambda: pytest.fail("rebuilt twice")), out)  # the rebuilt file is good


def test_corrupt_cache_files_are_rebuilt_with_a_warning(tmp_path, caplog):
    t, x = _teacher(), _x()
    cache, compute = _cache(tmp_path, t, x)
    good = cache.get(compute)
    data = cache.path.read_bytes()
    cache.path.write_bytes(data[: len(data) // 2])  # truncated
    c1, _ = _cache(tmp_path, t, x)
    with caplog.at_level(logging.WARNING, logger="edgekd.distill.cache"):
        assert torch.equal(c1.get(compute), good)
    assert c1.events[0].startswith("rebuilt: corrupt") and "unreadable teacher-output cache" in caplog.text
    # a flipped value in the stored outputs: the file still loads, the checksum catches it
    obj = torch.load(cache.path, weights_only=True)
    obj["outputs"][0, 0] += 1.0
    torch.save(obj, cache.path)
    c2, _ = _cache(tmp_path, t, x)
    assert torch.equal(c2.get(compute), good)
    assert c2.events == ["rebuilt: corrupt (checksum)", "built"]


# --- in the engine -----------------------------------------------------------------------------------
def _recipe(name: str, teacher: str, **train) -> object:
    return recipe_from_dict(
        {
            "name": name,
            "data": {"name": "digits"},
            "model": CNN_S,
            "teacher": {"path": teacher},
            "method": {"name": "kd", "params": {"temperature": 4.0, "alpha": 0.9}},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "optimizer": "adam", **train},
        }
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    r = recipe_from_dict(
        {
            "name": "teacher",
            "data": {"name": "digits"},
            "model": CNN_T,
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "optimizer": "adam"},
        }  # fmt: skip
    )
    return run_training(r, runs, distill=False, progress=False).root


def _count_teacher_calls(monkeypatch) -> list[int]:
    from edgekd.distill.methods.base import Distiller

    calls: list[int] = []
    real = Distiller.teacher_outputs

    def counting(self, x):
        calls.append(len(x))
        return real(self, x)

    monkeypatch.setattr(Distiller, "teacher_outputs", counting)
    return calls


@pytest.mark.slow
def test_distill_with_cache_equals_without_and_skips_the_teacher(tmp_path, teacher, monkeypatch):
    calls = _count_teacher_calls(monkeypatch)
    off = run_training(
        _recipe("off", str(teacher), cache_teacher=False), tmp_path, distill=True, progress=False
    )
    n_train = sum(calls) // 2  # two epochs, teacher on every sample each epoch
    assert n_train > 1000 and not (tmp_path / ".teacher-cache").exists()
    calls.clear()
    on = run_training(_recipe("on", str(teacher)), tmp_path, distill=True, progress=False)
    assert sum(calls) == n_train  # once, to build the cache
    speed = json.loads((on.root / "speed.json").read_text())
    assert speed["teacher_cache"]["events"] == ["built"]
    assert speed["channels_last"] is True and speed["world_size"] == 1  # a CNN on image batches
    s_off, _ = load_model(off.student)
    s_on, _ = load_model(on.student)
    # the same steps with the teacher's logits from a batch of 1024 instead of 64: float noise only
    for (name, a), b in zip(s_off.state_dict().items(), s_on.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name
    m_off, m_on = (json.loads(r.metrics.read_text())["final"] for r in (off, on))
    assert abs(m_off["test_accuracy"] - m_on["test_accuracy"]) <= 0.003
    # another student (a method sweep, another seed) on the same teacher and data: a hit, no teacher run
    calls.clear()
    again = run_training(_recipe("again", str(teacher), lr=0.02), tmp_path, distill=True, progress=False)
    assert calls == [] and json.loads((again.root / "speed.json").read_text())["teacher_cache"]["events"] == [
        "hit"
    ]


def test_cache_off_with_augmentation_and_said(tmp_path, teacher, monkeypatch):
    r = _recipe("jit", str(teacher))
    r.data.jitter = 1
    r.train.epochs = 1
    run = run_training(r, tmp_path, distill=True, progress=False)
    speed = json.loads((run.root / "speed.json").read_text())
    assert speed["teacher_cache"].startswith("off: data.augment shows new views every epoch")
    assert speed["teaching"].startswith("consistent") and speed["teacher_views"].startswith("online")
    assert not (tmp_path / ".teacher-cache").exists()


def test_augmented_view_cache_hands_the_teacher_output_of_the_students_own_view(
    tmp_path, teacher, monkeypatch
):
    """train.teacher_views=K: the teacher runs once on K views of every example (fp16 store); every step
    the output handed to the loss is the teacher's output on exactly the view the student sees."""
    from edgekd.distill.methods.base import Distiller

    calls = _count_teacher_calls(monkeypatch)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = Distiller.forward_train

    def recording(self, x, y, *a, teacher_out=None, **kw):
        if teacher_out is not None and len(seen) < 3:
            seen.append((x.detach().clone(), teacher_out.detach().clone()))
        return real(self, x, y, *a, teacher_out=teacher_out, **kw)

    monkeypatch.setattr(Distiller, "forward_train", recording)
    r = _recipe("views", str(teacher), teacher_views=3)
    r.data.augment = [
        {"name": "translate", "params": {"max_shift": 1}},
        {"name": "erase", "params": {"p": 0.5}},
    ]
    run = run_training(r, tmp_path, distill=True, progress=False)
    speed = json.loads((run.root / "speed.json").read_text())
    n_train = json.loads(run.data_info.read_text())["sizes"]["train"]
    assert sum(calls) == 3 * n_train  # the cache build only: K views, then never again
    assert speed["teacher_cache"]["events"] == ["built"] and speed["teacher_views"] == 3
    assert speed["teaching"].startswith("consistent")
    stored = torch.load(speed["teacher_cache"]["path"], weights_only=True)["outputs"]
    assert stored.dtype == torch.float16 and stored.shape[:2] == (3, n_train)
    t_net, _ = load_model(teacher / "model.pt")
    t_net.eval()
    for x, t_out in seen:
        with torch.no_grad():
            want = t_net(x.contiguous())
        assert torch.allclose(t_out, want, atol=2e-2, rtol=1e-2)  # fp16 storage
