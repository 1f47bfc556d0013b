"""Detection losses composed the way a recipe composes them (edgekd.distill.compose), and a CenterNet
student that learns from them: the pieces the training loop will wire up."""

from __future__ import annotations

import numpy as np
import torch

from edgekd.data.detection import paste_objects
from edgekd.distill.methods.base import ComposedDistiller
from edgekd.metrics.detection import detection_map
from edgekd.models import build_model
from edgekd.models.detection_codec import centernet_targets, decode_centernet
from edgekd.recipe import LossConfig


def _shapes(n: int, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """48 x 48 scenes of three shapes (class 0 solid square, 1 frame, 2 cross), 12..20 pixels, 1..3 each."""
    base = np.zeros((3, 12, 12), np.uint8)
    base[0] = 255
    base[1, [0, 1, 10, 11], :] = base[1, :, [0, 1, 10, 11]] = 255
    base[2, 5:7, :] = base[2, :, 5:7] = 255
    images, boxes, classes = paste_objects(base, np.arange(3), n, canvas=48, max_objects=3, sizes=(12, 20),
                                           max_iou=0.0, rng=np.random.default_rng(seed))  # fmt: skip
    x = torch.from_numpy(images).float() / 255
    return x, {"boxes": torch.from_numpy(boxes), "classes": torch.from_numpy(classes)}


def _student(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("centernet", input_shape=(1, 48, 48), num_classes=3, channels=[8, 16, 16, 16], **kw)


def test_task_and_distillation_losses_compose_on_one_step_with_one_encoding(monkeypatch):
    import edgekd.distill.losses.detection as det

    calls = []
    monkeypatch.setattr(det, "centernet_targets", lambda *a: calls.append(1) or centernet_targets(*a))
    x, targets = _shapes(8)
    student = _student()
    torch.manual_seed(1)
    teacher = build_model("centernet-teacher", input_shape=(1, 48, 48), num_classes=3, width=0.25).eval()
    losses = [LossConfig(name="centernet"), LossConfig(name="heatmap-kd", params={"temperature": 2.0}),
              LossConfig(name="bounded-regression"),
              LossConfig(name="feature-imitation", student="features.3", teacher="features.6")]  # fmt: skip
    d = ComposedDistiller(student, teacher, losses=losses, task="detection", sample_x=x[:2])
    assert list(d.composer.adapters) == ["3"]  # 16 student channels -> 32 teacher channels: a 1x1 adapter
    _, terms = d.forward_train(x, None, targets=targets)
    assert sorted(terms) == [
        "bounded-regression",
        "feature-imitation",
        "heatmap",
        "heatmap-kd",
        "offset",
        "wh",
    ]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    assert len(calls) == 1  # centernet and bounded-regression share the step's encoding
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert d.composer.adapters["3"][0].weight.grad.abs().sum() > 0


def test_a_centernet_student_learns_to_find_the_objects():
    """64 scenes, 150 steps of the task loss: mAP@0.5 on those scenes goes from ~0 to above 0.8 (1.0 here)."""
    x, targets = _shapes(64)
    student = _student()
    d = ComposedDistiller(student, None, losses=[LossConfig(name="centernet")], task="detection")
    opt = torch.optim.Adam(student.parameters(), 5e-3)

    def score() -> float:
        student.eval()
        with torch.no_grad():
            dets = decode_centernet(student(x).numpy(), student.layout, 4, threshold=0.05)
        student.train()
        return detection_map(*dets, targets["boxes"].numpy(), targets["classes"].numpy(), 3)["map_50"]

    before = score()
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(x), (16,), generator=g)
        _, terms = d.forward_train(x[idx], None, targets={k: v[idx] for k, v in targets.items()})
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    after = score()
    print(f"mAP@0.5 before {before:.3f} after {after:.3f}")
    assert before < 0.05 and after > 0.8, (before, after)
