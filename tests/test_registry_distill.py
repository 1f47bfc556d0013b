"""Generic checks run over every registered loss, method, loss preset and scheme (as timm's tests run over
``list_models()``): registering a new one makes these tests run on it, and a name without an example below
fails ``test_every_*_has_an_example`` until its author adds one.

Losses: a finite scalar whose gradient reaches the student (never the teacher) and goes downhill, unknown
params and foreign tasks refused in one line. Methods: one training step and a plain exported student.
Presets: loss lists of registered losses that train. Schemes: every run inside the scheme's folder, and a
second call with ``resume`` reuses them all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train import digits_recipe

from edgekd.distill.losses import LOSSES, PRESETS
from edgekd.distill.methods import METHODS, build_method
from edgekd.distill.methods.base import ComposedDistiller
from edgekd.distill.runner import run_training
from edgekd.distill.schemes import SCHEMES, build_scheme
from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.networks import list_networks
from edgekd.recipe import LossConfig

CNN = {"input_shape": [1, 8, 8], "num_classes": 10, "depthwise": False}
AE = {"input_shape": [6, 3]}

# name -> (LossConfig fields besides the name, task); features.* are the cnn's blocks, flatten its pooled vector
LOSS_EXAMPLES: dict[str, tuple[dict, str]] = {
    "ab": ({"student": "features.1.1", "teacher": "features.1.1"}, "classification"),
    "at": ({"student": "features.0,features.1", "teacher": "features.0,features.1"}, "classification"),
    "ce": ({}, "classification"),
    "bounded-regression": ({"params": {"margin": 0.0}}, "detection"),
    "centernet": ({}, "detection"),
    "dist": ({"params": {"temperature": 4.0}}, "classification"),
    "dkd": ({"params": {"temperature": 4.0}}, "classification"),
    "feature-imitation": (
        {"student": "features.2", "teacher": "features.2", "params": {"expand": 1.5}},
        "detection",
    ),
    "fomo": ({}, "detection"),
    "heatmap-kd": ({"params": {"temperature": 2.0}}, "detection"),
    "localization-distillation": ({"params": {"bins": 4, "temperature": 10.0}}, "detection"),
    "factor-transfer": ({"student": "features.2", "teacher": "features.2"}, "classification"),
    "fsp": ({"student": "features.0,features.1", "teacher": "features.0,features.1"}, "classification"),
    "ft-paraphraser": ({"teacher": "features.2"}, "classification"),
    "generalized-kd": ({"params": {"temperature": 2.0}}, "classification"),
    "gradient-at": ({}, "classification"),
    "hint": ({"student": "features.2", "teacher": "features.2"}, "classification"),
    "kd": ({"params": {"temperature": 4.0}}, "classification"),
    "mmd": ({"student": "features.1", "teacher": "features.1"}, "classification"),
    "nst": ({"student": "features.1", "teacher": "features.1"}, "classification"),
    "output-mse": ({}, "reconstruction"),
    "pkt": ({"student": "flatten", "teacher": "flatten"}, "classification"),
    "recon-mse": ({}, "reconstruction"),
    "rkd-angle": ({"student": "flatten", "teacher": "flatten"}, "classification"),
    "rkd-distance": ({"student": "flatten", "teacher": "flatten"}, "classification"),
    "sensor-mse": (
        {"params": {"features": [0, 2]}},
        "reconstruction",
    ),  # a 2-sensor student, 3-sensor teacher
    "soft-ce": ({"params": {"temperature": 2.0}}, "classification"),
    "sp": ({"student": "features.2", "teacher": "features.2"}, "classification"),
    "sparsity": ({"student": "features.2.1", "teacher": "features.2.1"}, "classification"),
    "wasserstein-kd": ({"params": {"eps": 0.1}}, "classification"),
}


DETECTION = {"input_shape": [1, 32, 32], "num_classes": 3}


def _detection_targets(n: int) -> dict[str, torch.Tensor]:
    """Two objects per image (classes i % 3 and 2), boxes in the 32x32 input."""
    boxes = torch.tensor([[2.0, 3.0, 13.0, 12.0], [17.0, 15.0, 30.0, 31.0]]).repeat(n, 1, 1)
    classes = torch.stack([torch.arange(n) % 3, torch.full((n,), 2)], dim=1)
    return {"boxes": boxes, "classes": classes}


def _detection_networks(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    if name == "fomo":
        return build_model("fomo", channels=[4, 8, 8], **DETECTION), build_model(
            "fomo", channels=[8, 16, 16], **DETECTION
        )
    head = {"head": "edges", "bins": 4} if name == "localization-distillation" else {}
    student = build_model("centernet", channels=[4, 8, 8], head_channels=8, **head, **DETECTION)
    return student, build_model("centernet", channels=[8, 16, 16], head_channels=16, **head, **DETECTION)


def _batch(task: str, n: int = 16, sensors: int = 3) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(0)
    if task == "detection":
        return torch.randn(n, 1, 32, 32, generator=g), torch.full((n,), 2)
    if task == "reconstruction":
        return torch.randn(n, 6, sensors, generator=g), None
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10


def _networks(task: str, student_sensors: int = 3) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    if task == "reconstruction":
        return build_model("fc-ae", input_shape=[6, student_sensors]), build_model("fc-ae", **AE)
    return build_model("cnn", channels=[4, 8, 8], **CNN), build_model("cnn", channels=[8, 16, 16], **CNN)


def _composed(name: str, **over) -> tuple[ComposedDistiller, dict]:
    """The loss ``name`` alone in a composed distiller on its example networks, and the batch for it."""
    fields, task = LOSS_EXAMPLES[name]
    fields = {**fields, **over}
    sensors = len(fields.get("params", {}).get("features", [0, 1, 2]))
    student, teacher = _detection_networks(name) if task == "detection" else _networks(task, sensors)
    x, y = _batch(task, sensors=sensors)
    x_teacher, _ = _batch(task)
    privileged = name == "sensor-mse"
    d = ComposedDistiller(student, teacher if LOSSES.get(name).needs_teacher else None,
                          losses=[LossConfig(name=name, **fields)], task=task, sample_x=x[:2],
                          teacher_input="x_star" if privileged else "x")  # fmt: skip
    targets = _detection_targets(len(x)) if task == "detection" else None
    return d.eval(), {
        "x": x,
        "y": y,
        "extra": {"x_star": x_teacher} if privileged else None,
        "targets": targets,
    }


def _total(d: ComposedDistiller, batch: dict) -> torch.Tensor:
    _, terms = d.forward_train(batch["x"], batch["y"], batch["extra"], targets=batch["targets"])
    return sum(terms.values())


def test_every_loss_has_an_example():
    assert sorted(LOSS_EXAMPLES) == LOSSES.names()


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_is_a_finite_scalar_whose_gradient_reaches_only_the_student(name):
    info = LOSSES.get(name)
    assert info.summary, f"loss {name}: its docstring's first line gives the formula"
    assert info.paper or not info.needs_teacher or name == "output-mse", f"loss {name}: cite its paper"
    d, batch = _composed(name)
    total = _total(d, batch)
    assert total.ndim == 0 and torch.isfinite(total), name
    total.backward()
    trained = d.student if info.student_side else d.composer
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters()), name
    if d.teacher is not None:
        assert all(p.grad is None for p in d.teacher.parameters()), name


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_goes_downhill_under_its_own_gradient(name):
    d, batch = _composed(name)
    opt = torch.optim.Adam(d.trainable_parameters(), lr=3e-3)
    first = _total(d, batch).item()
    for _ in range(15):
        opt.zero_grad()
        _total(d, batch).backward()
        opt.step()
    assert _total(d, batch).item() < first, name


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_refuses_unknown_params_in_one_line(name):
    fields, _ = LOSS_EXAMPLES[name]
    with pytest.raises(
        EdgekdError, match=rf"unknown param\(s\) no_such_param for loss '{name}'; valid: "
    ) as e:
        _composed(name, params={**fields.get("params", {}), "no_such_param": 1})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if len(LOSSES.get(n).tasks) == 1])
def test_loss_refuses_a_task_it_is_not_defined_for(name):
    (task,) = LOSSES.get(name).tasks
    other = "reconstruction" if task == "classification" else "classification"
    student, teacher = _networks(other)
    x, _ = _batch(other)
    with pytest.raises(EdgekdError, match=name) as e:
        ComposedDistiller(student, teacher, losses=[LossConfig(name=name)], task=other, sample_x=x[:2])
    assert "\n" not in str(e.value)


# --- methods ----------------------------------------------------------------------------------------------
# name -> (params, task)
METHOD_EXAMPLES: dict[str, tuple[dict, str]] = {
    "byot": ({"exits": [1]}, "classification"),
    "dml": ({"peers": 2}, "classification"),
    "netaug": ({"width_mults": [1.0, 2.0], "bn_samples": 16}, "classification"),
    "noisy-sequential": ({"alpha": 0.5}, "reconstruction"),
    "one": ({"branches": 2, "split": 2}, "classification"),
}


def _method(name: str, **params):
    base, task = METHOD_EXAMPLES[name]
    student, teacher = _networks(task)
    x, _ = _batch(task)
    factory = (lambda: build_model("cnn", channels=[4, 8, 8], **CNN)) if task == "classification" else None
    d = build_method(
        name, student, teacher, {**base, **params}, task=task, sample_x=x[:2], model_factory=factory
    )
    return d, student, task


def test_every_method_has_an_example():
    assert sorted(METHOD_EXAMPLES) == METHODS.names()


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_one_step_and_exports_a_plain_student(name):
    d, student, task = _method(name)
    x, y = _batch(task)
    shape = tuple(student(x).shape)
    d.train()
    _, terms = d.forward_train(x, y)
    assert terms and all(t.ndim == 0 and torch.isfinite(t) for t in terms.values()), name
    sum(terms.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.trainable_parameters()), name
    exported = d.export_student().eval()
    assert tuple(exported(x).shape) == shape, name  # what export sees: the student's interface
    assert all(isinstance(m, torch.nn.Module) for m in d.networks().values())


@pytest.mark.parametrize("name", METHODS.names())
def test_method_refuses_unknown_params_in_one_line(name):
    with pytest.raises(EdgekdError, match=rf"unknown key\(s\) no_such_param for method '{name}'; valid: "):
        _method(name, no_such_param=1)


# --- loss presets -------------------------------------------------------------------------------------------
PRESET_EXAMPLES: dict[str, str] = {  # name -> task
    "kd": "classification",
    "privileged": "classification",
    "supervised": "reconstruction",
    "wasserstein-kd": "classification",
}


def test_every_preset_has_an_example():
    assert sorted(PRESET_EXAMPLES) == PRESETS.names()


@pytest.mark.parametrize("name", PRESETS.names())
def test_preset_is_a_list_of_registered_losses_that_trains(name):
    task = PRESET_EXAMPLES[name]
    preset = PRESETS.get(name)
    specs = preset.build(task)
    assert specs and all(s.name in LOSSES and task in LOSSES.get(s.name).tasks for s in specs), name
    assert preset.needs_teacher == any(LOSSES.get(s.name).needs_teacher for s in specs), name
    student, teacher = _networks(task)
    x, y = _batch(task)
    d = build_method(name, student, teacher if preset.needs_teacher else None, {}, task=task, sample_x=x[:2])
    _, terms = d.forward_train(x, y)
    assert len(terms) >= len(specs) and all(torch.isfinite(t) for t in terms.values()), name  # each logged
    sum(terms.values()).backward()
    assert any(p.grad is not None for p in student.parameters())


# --- schemes ------------------------------------------------------------------------------------------------
MLP = {"name": "mlp", "kwargs": {"hidden": [16]}}
TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.05}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Two finished runs on digits: a teacher and a second library member."""
    root = tmp_path_factory.mktemp("library")
    for name, seed in (("teacher", 0), ("other", 1)):
        run_training(
            digits_recipe(name=name, seed=seed, model=MLP, train=TRAIN), root, distill=False, progress=False
        )
    return root


def _scheme_params(name: str, library: Path) -> dict:
    return {
        "born-again": {"generations": 2},
        "born-again-ensemble": {"generations": 2},
        "ensemble-selection": {"library": [str(library / "teacher"), str(library / "other")], "size": 2},
        "single": {},
        "specialists": {"subsets": 2, "epochs": 1},
    }[name]


def test_every_scheme_has_an_example(library):
    assert sorted(n for n in SCHEMES.names() if _scheme_params(n, library) is not None) == SCHEMES.names()


def _snapshot(root: Path) -> dict[Path, tuple[bytes, int | None]]:
    """Every model file's bytes, and for the scheme's runs (sub-folders) when it was written: the root's
    copies of the final network are rewritten on resume, the runs themselves must not be."""
    return {
        p: (p.read_bytes(), None if p.parent == root else p.stat().st_mtime_ns) for p in root.rglob("*.pt")
    }


@pytest.mark.parametrize("name", SCHEMES.names())
def test_scheme_keeps_its_runs_inside_its_folder_and_resumes_without_retraining(name, library, tmp_path):
    rec = digits_recipe(name="s", model=MLP, train=TRAIN, method={"name": "kd"},
                        teacher={"path": str(library / "teacher")},
                        scheme={"name": name, "params": _scheme_params(name, library)})  # fmt: skip
    distill = name != "ensemble-selection"  # it picks its own teacher from the library
    run = run_training(rec, tmp_path, distill=distill, progress=False)
    models = _snapshot(run.root)
    nets = list_networks(run.root)  # refuses a path outside the run folder or a missing file
    assert run.trained_model() in models and all(p in models for p in nets.values()), sorted(models)
    assert len(nets) == {"born-again": 2, "born-again-ensemble": 2}.get(name, len(nets)), nets
    run_training(rec, tmp_path, distill=distill, progress=False, resume=True)
    assert _snapshot(run.root) == models, f"{name} retrained a run on resume"


@pytest.mark.parametrize("name", SCHEMES.names())
def test_scheme_refuses_unknown_params_in_one_line(name):
    with pytest.raises(EdgekdError, match=rf"unknown key\(s\) no_such_param for scheme '{name}'; valid: "):
        build_scheme(name, {"no_such_param": 1})
