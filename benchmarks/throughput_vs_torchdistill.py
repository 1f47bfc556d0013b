"""Training throughput: edgekd vs torchdistill vs a bare eager loop, same KD recipe, side by side.

    python benchmarks/throughput_vs_torchdistill.py            # ~10 min on 2 shared cores
    python benchmarks/throughput_vs_torchdistill.py --quick    # a smoke run

The fair setting: the demo's KD models (teacher MLP 784-512-512-10, student depthwise CNN [16, 32, 32]),
Hinton KD (T=4; 0.7 KD + 0.3 CE), SGD (lr 0.05, momentum 0.9, cosine per epoch), batch 128, Fashion-MNIST held
in memory as float32 tensors on every side, 1 intra-op thread, CPU. Every side starts from the same
student weights and the same teacher, and visits the same batches in the same order (edgekd's seeded
permutation, handed to torchdistill as its sampler and to the bare loop). Each measurement is a fresh
subprocess; the sides alternate A B C A B C. Timed (after the imports, including ``torch._dynamo``, which
the first optimizer of any process imports): the whole training call (edgekd: ``Trainer.fit``
including building the teacher-output cache from cold and its checkpoints; torchdistill: its epochs
through ``DistillationBox``; bare: the loop), never data loading or imports. Accuracy: the same
evaluation of each side's final student on the 10k test images.

torchdistill 1.1.5 is installed with ``pip --no-deps --target benchmarks/.torchdistill-env`` together
with torchvision 0.28.0 (the release paired with torch 2.13), and only the worker that runs it has that
folder on its path; it uses this venv's torch 2.13.0 (a full virtual environment would install a second
torch). PyPI's torchvision is a CUDA build whose compiled ops do not load against the CPU torch here
(``operator torchvision::nms does not exist``); the worker makes torch's
``_dispatch_has_kernel_for_dispatch_key`` check tolerant before importing it, which is enough: the KD
loss and the distillation box need no torchvision op.

Also measured (``--extras``): a Born-Again run of 3 generations with and without the teacher-output
cache, and ``edgekd distill --nproc 2`` (torchrun, gloo, DDP) against 1 process.

``--augmented`` (issue 20's cost goal; combinable with ``--quick``; no extras) trains the same student, optimizer
and batches with edgekd's augmentation ``crop(padding=2)`` + ``hflip`` on every side, distilled from the teacher
kd_gain.py uses on Fashion-MNIST (the architecture of the committed reference teacher, a VGG far costlier per
image than the MLP above), 16 epochs (2 per cached view), four sides alternating:

- ``edgekd``: KD with consistent teaching from K = 8 cached augmented teacher views (``Trainer(augmentation=,
  teacher_views=8)``); the cache build (``speed["teacher_cache"]["seconds"]``) is reported apart and inside the total;
- ``edgekd-supervised``: the same Trainer and augmentation on labels only (the reference of the 1.15x goal);
- ``torchdistill``: its ``DistillationBox``, the teacher run on every step on the augmented batch;
- ``bare``: the eager loop, the teacher online on every step.

Every side trains on identical pixels: view ``pick_views(epoch, index, 8)`` of each example of edgekd's batch,
built by edgekd's ``Augmentation.apply`` (torchdistill: a registered collate function over the batch's indices;
the bare loop: the same function), inside the timed region on every side. Goals, in the JSON: edgekd's KD
training time without the cache build at most 1.15x the supervised time, and edgekd's samples/s (cache build
included) at least 2x torchdistill's, each on the median of the ratios paired per repeat. Results:
``results/throughput_vs_torchdistill_augmented.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, print_table, write_results  # noqa: E402
from teachers import RECIPES as _REFERENCE_RECIPES  # noqa: E402

WORK = REPO / "benchmarks" / ".work" / "throughput"
TD_ENV = REPO / "benchmarks" / ".torchdistill-env"
TD_PINS = ["torchdistill==1.1.5", "torchvision==0.28.0"]
SETTINGS = {
    "data": "fashion-mnist (in memory, float32, normalised)",
    "teacher": {"name": "mlp", "kwargs": {"hidden": [512, 512]}},
    "student": {"name": "cnn", "kwargs": {"channels": [16, 32, 32], "depthwise": True}},
    "kd": {"temperature": 4.0, "kd_weight": 0.7, "ce_weight": 0.3},
    "optimizer": "sgd lr=0.05 momentum=0.9, cosine per epoch (x1, x0.75, x0.25 over 3 epochs)",
    "batch_size": 128,
    "threads": 1,
    "device": "cpu",
}
SEED = 0
AUGMENT = [{"name": "crop", "params": {"padding": 2}}, {"name": "hflip"}]  # kd_gain.py's Fashion-MNIST recipe
VIEWS = 8  # cached teacher views (train.teacher_views)
# --augmented distils from the teacher kd_gain.py uses on Fashion-MNIST: the committed reference teacher
# (benchmarks/teachers/fashion-mnist) when it is there, else the same architecture trained 3 epochs here
AUG_TEACHER = {"kwargs": {}, **_REFERENCE_RECIPES["fashion-mnist"]["model"]}
AUG_EPOCHS = 16  # 2 epochs per cached view: kd_gain.py's Fashion-MNIST rows run 30 epochs on 16 views
REFERENCE_TEACHER = REPO / "benchmarks" / "teachers" / "fashion-mnist" / "model.pt"
AUG_SIDES = ["edgekd", "edgekd-supervised", "torchdistill", "bare"]
KD_OVER_SUPERVISED_MAX, OVER_TORCHDISTILL_MIN = 1.15, 2.0


# --- shared by the workers ------------------------------------------------------------------------------
def load_arrays(work: Path):
    import numpy as np
    import torch

    a = {k: torch.from_numpy(np.load(work / f"{k}.npy")) for k in ("x_train", "y_train", "x_test", "y_test")}
    return a


def build(spec: dict):
    from edgekd.models import build_model

    return build_model(spec["name"], input_shape=[1, 28, 28], num_classes=10, **spec["kwargs"])


def permutations(n: int, epochs: int):
    """edgekd's order: one ``randperm`` per epoch from a generator seeded with the run's seed."""
    import torch

    gen = torch.Generator().manual_seed(SEED)
    return [torch.randperm(n, generator=gen) for _ in range(epochs)]


def worker(side: str, work: Path, epochs: int, tag: str, augmented: bool = False) -> dict:
    import torch
    import torch._dynamo  # noqa: F401  (imported by the first optimizer anywhere: a one-time 2-4 s, not timed)

    torch.set_num_threads(1)
    a = load_arrays(work)
    teacher = build(AUG_TEACHER if augmented else SETTINGS["teacher"])
    teacher.load_state_dict(
        torch.load(work / ("teacher_aug.pt" if augmented else "teacher.pt"), weights_only=True)
    )
    teacher.eval()
    student = build(SETTINGS["student"])
    student.load_state_dict(torch.load(work / "student_init.pt", weights_only=True))
    n = len(a["y_train"])
    fns = (
        AUG_RUNNERS
        if augmented
        else {"edgekd": run_edgekd, "torchdistill": run_torchdistill, "bare": run_bare}
    )
    out = fns[side](teacher, student, a, epochs, work / f"cache-{tag}")
    timing = out if isinstance(out, dict) else {"seconds": out}
    torch.save(student.state_dict(), work / f"student-{tag}.pt")
    return {**timing, "samples": n * epochs, "samples_per_s": n * epochs / timing["seconds"]}


def edgekd_trainer(teacher, student, a, epochs, cache_dir, **augment):
    """edgekd's Trainer for the recipe: Hinton KD from ``teacher``, or labels only when it is None."""
    import shutil

    from edgekd.distill.methods import build_method
    from edgekd.distill.train import Stage, Trainer
    from edgekd.recipe import TrainConfig
    from edgekd.runfolder import RunFolder

    shutil.rmtree(cache_dir, ignore_errors=True)  # a cold cache: building it is part of the time
    kd = SETTINGS["kd"]
    if teacher is None:
        d = build_method("supervised", student, None, {})
    else:
        d = build_method("kd", student, teacher, {"temperature": kd["temperature"], "alpha": kd["kd_weight"]},
                         task="classification", sample_x=a["x_train"][:2])  # fmt: skip
    cfg = TrainConfig(epochs=epochs, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine",
                      threads=1, device="cpu")  # fmt: skip
    run = RunFolder(cache_dir / "run").ensure()
    return Trainer(
        [Stage("train", d, cfg)], None, run, seed=SEED, progress=False, cache_dir=cache_dir, **augment
    )


def timed_fit(trainer, a) -> float:
    """Seconds of ``trainer.fit`` on the training arrays (the dataset is wrapped before the clock starts)."""
    from edgekd.data import ArrayDataset

    train = ArrayDataset(a["x_train"].numpy(), a["y_train"].numpy())
    t0 = time.perf_counter()
    trainer.fit(train)
    return time.perf_counter() - t0


def run_edgekd(teacher, student, a, epochs, cache_dir) -> float:
    import torch

    trainer = edgekd_trainer(teacher, student, a, epochs, cache_dir)
    dt = timed_fit(trainer, a)
    assert torch.is_tensor(a["x_train"]) and trainer.speed["teacher_cache"]["events"] == ["built"]
    return dt


def import_torchdistill() -> None:
    """Make torch's dispatch-key check tolerant, then import torchdistill (and its torchvision)."""
    import torch

    real = torch._C._dispatch_has_kernel_for_dispatch_key

    def tolerant(*args):  # torchvision's CUDA wheel registers ops that do not exist in this CPU torch
        try:
            return real(*args)
        except RuntimeError:
            return False

    torch._C._dispatch_has_kernel_for_dispatch_key = tolerant
    import torchdistill.core.distillation  # noqa: F401


def run_torchdistill(teacher, student, a, epochs, cache_dir) -> float:
    import torch

    import_torchdistill()
    perms = iter(permutations(len(a["y_train"]), epochs))

    class SameOrder(torch.utils.data.Sampler):
        """edgekd's permutation for each epoch (so that both sides see the same batches)."""

        def __init__(self, dataset):
            self.n = len(dataset)

        def __iter__(self):
            return iter(next(perms).tolist())

        def __len__(self):
            return self.n

    dataset = torch.utils.data.TensorDataset(a["x_train"], a["y_train"])
    return td_fit(teacher, student, dataset, td_config(epochs, SameOrder), epochs)


def td_config(epochs: int, sampler, **loader) -> dict:
    """torchdistill's configuration of the recipe; ``loader``: more keys of its train data loader."""
    kd = SETTINGS["kd"]
    return {
        "num_epochs": epochs,
        "train_data_loader": {"dataset_id": "train", "requires_supp": True, "sampler": {"class_or_func": sampler},
                              "kwargs": {"batch_size": 128, "num_workers": 0}, **loader},
        "teacher": {"sequential": [], "requires_grad": False, "forward_proc": "forward_batch_only"},
        "student": {"sequential": [], "requires_grad": True, "forward_proc": "forward_batch_only"},
        "optimizer": {"key": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9}},
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": epochs}, "scheduling_step": 0},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"weight": 1.0, "criterion": {
            "key": "KDLoss", "kwargs": {"student_module_path": ".", "student_module_io": "output",
                                        "teacher_module_path": ".", "teacher_module_io": "output",
                                        "temperature": kd["temperature"], "alpha": kd["ce_weight"],
                                        "beta": kd["kd_weight"], "reduction": "batchmean"}}}}}},
    }  # fmt: skip


def td_fit(teacher, student, dataset, config: dict, epochs: int) -> float:
    """Seconds of torchdistill's epochs through ``DistillationBox`` (building the box included)."""
    import torch
    from torchdistill.core.distillation import get_distillation_box

    device = torch.device("cpu")
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    box = get_distillation_box(teacher, student, {"train": dataset}, config, device, None, False, 1)
    for epoch in range(epochs):
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            sample_batch, targets = sample_batch.to(device), targets.to(device)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss)
        box.post_epoch_process()
    return time.perf_counter() - t0


def run_bare(teacher, student, a, epochs, cache_dir, batch=None) -> float:
    """The plain eager loop: slice the batch (or ``batch(idx, epoch)``), teacher under no_grad, student, KD + CE,
    SGD step."""
    import torch
    import torch.nn.functional as F

    batch = batch or (lambda idx, epoch: (a["x_train"][idx], a["y_train"][idx]))
    kd = SETTINGS["kd"]
    T = kd["temperature"]
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    y = a["y_train"]
    torch.manual_seed(SEED)  # dropout masks: the stream edgekd's engine starts from
    t0 = time.perf_counter()
    student.train()
    for epoch, perm in enumerate(permutations(len(y), epochs)):
        for g in opt.param_groups:
            g["lr"] = 0.05 * 0.5 * (1 + math.cos(math.pi * epoch / epochs))  # edgekd's cosine factor
        for i in range(0, len(y), 128):
            idx = perm[i : i + 128]
            xb, yb = batch(idx, epoch)
            with torch.no_grad():
                zt = teacher(xb)
            zs = student(xb)
            kl = F.kl_div(
                F.log_softmax(zs / T, 1), F.log_softmax(zt / T, 1), log_target=True, reduction="batchmean"
            )
            loss = kd["kd_weight"] * T * T * kl + kd["ce_weight"] * F.cross_entropy(zs, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


# --- --augmented: the same recipe on edgekd's augmented views ------------------------------------------
def augmentation():
    """edgekd's augmentation of the recipe (``data.augment`` as the recipe parses it, the run's seed)."""
    from edgekd.data.augment import Augmentation, parse_augment

    return Augmentation(parse_augment(AUGMENT, "fashion-mnist", "classification"), SEED)


def augmented_batch(aug, x, y, idx, epoch: int):
    """The batch ``idx`` of ``epoch`` as edgekd's Trainer builds it: each example's view among the K cached."""
    index = idx.numpy()
    return aug.apply(x, y, index, aug.pick_views(epoch, index, VIEWS), 10)


class AugmentedOrder:
    """torchdistill's sampler and collate function for ``--augmented``: edgekd's permutation of each epoch,
    and each batch of indices turned into edgekd's augmented views of that epoch."""

    def __init__(self, a: dict, epochs: int) -> None:
        self.x, self.y = a["x_train"], a["y_train"]
        self.perms = permutations(len(self.y), epochs)
        self.aug = augmentation()
        self.epoch = -1

    def sampler(self, dataset) -> AugmentedOrder:  # torchdistill calls ``class_or_func(dataset)``
        assert len(dataset) == len(self.y)
        return self

    def __iter__(self):
        self.epoch += 1
        return iter(self.perms[self.epoch].tolist())

    def __len__(self) -> int:
        return len(self.y)

    def collate(self, items: list):
        """``(index, label, supp)`` items of one batch -> (augmented inputs, labels, supp)."""
        import torch

        idx = torch.stack([item[0] for item in items])
        xb, yb = augmented_batch(self.aug, self.x, self.y, idx, self.epoch)
        return xb, yb, {}


def index_dataset(n: int):
    """The torchdistill side's dataset: example ``i`` is its index (the collate function builds its view)."""
    import torch

    return torch.utils.data.TensorDataset(torch.arange(n), torch.zeros(n, dtype=torch.long))


def aug_trainer_kw(aug) -> dict:
    return {"augmentation": aug, "teacher_views": VIEWS, "num_classes": 10}


def run_edgekd_aug(teacher, student, a, epochs, cache_dir) -> dict:
    aug = augmentation()
    trainer = edgekd_trainer(teacher, student, a, epochs, cache_dir, **aug_trainer_kw(aug))
    dt = timed_fit(trainer, a)
    cache, sp = trainer.speed["teacher_cache"], trainer.speed
    assert (
        cache["events"] == ["built"] and sp["teacher_views"] == VIEWS and sp["augment"] == aug.describe()
    ), sp
    return {"seconds": dt, "cache_seconds": cache["seconds"], "train_seconds": dt - cache["seconds"]}


def run_supervised_aug(teacher, student, a, epochs, cache_dir) -> dict:
    aug = augmentation()
    trainer = edgekd_trainer(None, student, a, epochs, cache_dir, **aug_trainer_kw(aug))
    dt = timed_fit(trainer, a)
    assert trainer.augment is aug and trainer.teacher_views == VIEWS
    return {"seconds": dt}


def run_torchdistill_aug(teacher, student, a, epochs, cache_dir) -> float:
    import_torchdistill()
    from torchdistill.datasets.registry import register_collate_func

    order = AugmentedOrder(a, epochs)
    register_collate_func(key="edgekd_augment")(order.collate)
    config = td_config(epochs, order.sampler, collate_fn="edgekd_augment")
    dt = td_fit(teacher, student, index_dataset(len(a["y_train"])), config, epochs)
    assert order.epoch == epochs - 1
    return dt


def run_bare_aug(teacher, student, a, epochs, cache_dir) -> float:
    aug, x, y = augmentation(), a["x_train"], a["y_train"]
    return run_bare(
        teacher, student, a, epochs, cache_dir, lambda idx, epoch: augmented_batch(aug, x, y, idx, epoch)
    )


AUG_RUNNERS = {"edgekd": run_edgekd_aug, "edgekd-supervised": run_supervised_aug,
               "torchdistill": run_torchdistill_aug, "bare": run_bare_aug}  # fmt: skip


# --- the parent ---------------------------------------------------------------------------------------
def ensure_torchdistill() -> None:
    if (TD_ENV / "torchdistill").is_dir() and (TD_ENV / "torchvision").is_dir():
        return
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(TD_ENV),
                           *TD_PINS])  # fmt: skip


def prepare_aug_teacher(work: Path) -> str:
    """--augmented's teacher weights (``teacher_aug.pt``): the reference teacher's, or 3 epochs of training."""
    import torch

    if REFERENCE_TEACHER.exists():
        from edgekd.models import load_model

        model, _ = load_model(REFERENCE_TEACHER)
        torch.save({k: v.float() for k, v in model.state_dict().items()}, work / "teacher_aug.pt")
        return f"reference teacher {REFERENCE_TEACHER.relative_to(REPO)}"
    from edgekd.data import load_data

    teacher = train_teacher(AUG_TEACHER, load_data("fashion-mnist", seed=SEED, val_fraction=0.0).train, work)
    torch.save(teacher.state_dict(), work / "teacher_aug.pt")
    return f"{AUG_TEACHER['name']} trained 3 epochs here (no reference teacher committed yet)"


def train_teacher(spec: dict, train, work: Path):
    import torch

    from edgekd.distill.methods import build_method
    from edgekd.distill.train import Stage, Trainer
    from edgekd.recipe import TrainConfig
    from edgekd.runfolder import RunFolder

    torch.manual_seed(SEED)
    teacher = build(spec)
    sup = build_method("supervised", teacher, None, {})
    cfg = TrainConfig(
        epochs=3, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, threads=1, device="cpu"
    )
    Trainer([Stage("t", sup, cfg)], None, RunFolder(work / f"teacher-run-{spec['name']}").ensure(),
            progress=False).fit(train)  # fmt: skip
    return teacher


def prepare(work: Path, train_size: int) -> None:
    """Data arrays, a trained teacher and the shared initial student, once."""
    import numpy as np
    import torch

    meta = work / "meta.json"
    if (
        (work / "teacher.pt").exists()
        and meta.exists()
        and json.loads(meta.read_text())["train_size"] == train_size
    ):
        return
    from edgekd.data import load_data

    work.mkdir(parents=True, exist_ok=True)
    splits = load_data("fashion-mnist", seed=SEED, val_fraction=0.0)
    train = splits.train.subset(np.arange(min(train_size, len(splits.train))))
    for k, v in {
        "x_train": train.x,
        "y_train": train.y,
        "x_test": splits.test.x,
        "y_test": splits.test.y,
    }.items():
        np.save(work / f"{k}.npy", np.ascontiguousarray(v))
    teacher = train_teacher(SETTINGS["teacher"], splits.train, work)
    torch.save(teacher.state_dict(), work / "teacher.pt")
    torch.manual_seed(SEED + 1)
    torch.save(build(SETTINGS["student"]).state_dict(), work / "student_init.pt")
    (work / "meta.json").write_text(json.dumps({"train_size": len(train)}))


def accuracy(work: Path, spec: dict, weights: Path) -> float:
    import torch

    from edgekd.data import ArrayDataset
    from edgekd.metrics.evaluate import evaluate

    a = load_arrays(work)
    m = build(spec)
    m.load_state_dict(torch.load(weights, weights_only=True))
    return evaluate(m, ArrayDataset(a["x_test"].numpy(), a["y_test"].numpy()))["accuracy"]


def spawn(side: str, epochs: int, tag: str, augmented: bool = False) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if side == "torchdistill":
        env["PYTHONPATH"] = f"{REPO}{os.pathsep}{TD_ENV}"
    cmd = [sys.executable, __file__, "--worker", side, "--epochs", str(epochs), "--tag", tag]
    out = subprocess.run(cmd + ["--augmented"] * augmented, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{side} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def side_by_side(sides: list[str], repeats: int, epochs: int, augmented: bool = False) -> dict:
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(repeats):  # A B C A B C: the machine's load drifts, both sides see it
        for s in sides:
            tag = f"{'aug-' * augmented}{s}-{r}"
            res = spawn(s, epochs, tag, augmented)
            res["accuracy"] = accuracy(WORK, SETTINGS["student"], WORK / f"student-{tag}.pt")
            runs[s].append(res)
            cache = f" (cache build {res['cache_seconds']:.1f} s)" if "cache_seconds" in res else ""
            print(
                f"  {s} #{r + 1}: {res['samples_per_s']:.0f} samples/s{cache}, test accuracy {res['accuracy']:.4f}"
            )
    return runs


def paired_ratios(runs: dict) -> dict[str, list[float]]:
    """--augmented: the ratios of the goals, one per repeat (the sides of a repeat ran back to back)."""
    e, sup, td, bare = (runs[s] for s in AUG_SIDES)

    def sps_without_cache(r: dict) -> float:
        return r["samples"] / r["train_seconds"]

    return {
        "kd_over_supervised_time": [x["seconds"] / y["seconds"] for x, y in zip(e, sup)],
        "kd_over_supervised_time_without_cache": [x["train_seconds"] / y["seconds"] for x, y in zip(e, sup)],
        "over_torchdistill": [x["samples_per_s"] / y["samples_per_s"] for x, y in zip(e, td)],
        "over_torchdistill_without_cache": [sps_without_cache(x) / y["samples_per_s"] for x, y in zip(e, td)],
        "over_bare": [x["samples_per_s"] / y["samples_per_s"] for x, y in zip(e, bare)],
    }


def augmented_result(runs: dict, args: argparse.Namespace, steps: int) -> dict:
    """--augmented: samples/s per side, the paired ratios, the goals, accuracies and settings."""
    pairs = paired_ratios(runs)
    ratio = {k: statistics.median(v) for k, v in pairs.items()}
    mean = lambda side, key: statistics.fmean(r[key] for r in runs[side])  # noqa: E731
    kd_sup, over_td = ratio["kd_over_supervised_time_without_cache"], ratio["over_torchdistill"]
    return {
        "goals": {
            "kd_over_supervised_at_most_1.15": kd_sup <= KD_OVER_SUPERVISED_MAX,
            "over_torchdistill_at_least_2x": over_td >= OVER_TORCHDISTILL_MIN,
        },
        "goal_rules": {
            "kd_over_supervised": "median over repeats of edgekd KD seconds without the cache build / edgekd-supervised seconds",
            "over_torchdistill": "median over repeats of edgekd samples/s (cache build included) / torchdistill samples/s",
        },
        "ratios": ratio,
        "ratios_per_pair": pairs,
        "samples_per_s": {s: mean(s, "samples_per_s") for s in AUG_SIDES},
        "seconds": {s: mean(s, "seconds") for s in AUG_SIDES},
        "edgekd_cache_seconds": mean("edgekd", "cache_seconds"),
        "edgekd_train_seconds_without_cache": mean("edgekd", "train_seconds"),
        "accuracy": {s: mean(s, "accuracy") for s in AUG_SIDES},
        "runs": runs,
        "settings": {
            **SETTINGS,
            "teacher": {**AUG_TEACHER, "weights": args.teacher},
            "augment": augmentation().describe(),
            "teacher_views": VIEWS,
            "teaching": "consistent: every side's teacher scores the student's augmented view; edgekd from its "
            "K cached views, torchdistill and bare online on every step",
            "views": f"pick_views(epoch, index, {VIEWS}) of edgekd's seeded permutation, identical pixels on every side",
            "train_size": args.train_size,
            "epochs": args.epochs,
            "steps": steps,
            "repeats": args.repeats,
            "order": "alternating " + ", ".join(AUG_SIDES),
            "torchdistill": TD_PINS,
            "edgekd_cache": f"{VIEWS} augmented views of every example, built cold in every run, timed apart and in the total",
        },
        "machine": machine(),
    }


def print_augmented(result: dict, steps: int) -> None:
    sps, sec, acc, ratio = result["samples_per_s"], result["seconds"], result["accuracy"], result["ratios"]
    rows = []
    for s in AUG_SIDES:
        cache = f" (cache {result['edgekd_cache_seconds']:.1f})" if s == "edgekd" else ""
        rows.append([s, f"{sec[s]:.1f}{cache}", f"{sps[s]:.0f}", f"{sps[s] / sps['torchdistill']:.2f}x",
                     f"{sec[s] / sec['edgekd-supervised']:.2f}x", f"{acc[s]:.4f}"])  # fmt: skip
    print_table(f"KD throughput with crop + hflip, {steps} steps, batch 128, K={VIEWS} cached views, 1 thread (CPU)",
                ["side", "seconds", "samples/s", "vs torchdistill", "time vs supervised", "test acc"], rows)  # fmt: skip
    print(f"KD / supervised time (median of pairs): {ratio['kd_over_supervised_time_without_cache']:.3f}x without "
          f"the cache build, {ratio['kd_over_supervised_time']:.3f}x with it; edgekd / torchdistill samples/s: "
          f"{ratio['over_torchdistill']:.2f}x; goals: {result['goals']}")  # fmt: skip


def augmented_mode(args: argparse.Namespace) -> None:
    steps = args.epochs * -(-args.train_size // 128)
    print(f"--augmented: {args.repeats} x ({', '.join(AUG_SIDES)}), {steps} steps each")
    runs = side_by_side(AUG_SIDES, args.repeats, args.epochs, augmented=True)
    result = augmented_result(runs, args, steps)
    path = write_results("throughput_vs_torchdistill_augmented" + ("_quick" if args.quick else ""), result)
    print_augmented(result, steps)
    print(f"wrote {path}")


def extras(quick: bool) -> dict:
    """Born-Again (3 generations) with and without the cache; torchrun 2 processes vs 1."""
    import shutil

    import yaml

    out: dict = {}
    base = WORK / "extras"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    teacher_run = WORK / "teacher-run-folder"
    if not (teacher_run / "model.pt").exists():
        import torch

        from edgekd.models import save_model

        m = build(SETTINGS["teacher"])
        m.load_state_dict(torch.load(WORK / "teacher.pt", weights_only=True))
        teacher_run.mkdir(parents=True, exist_ok=True)
        save_model(teacher_run / "model.pt", m, SETTINGS["teacher"]["name"],
                   {"input_shape": [1, 28, 28], "num_classes": 10, **SETTINGS["teacher"]["kwargs"]})  # fmt: skip
    size = 0.05 if quick else 0.1  # of Fashion-MNIST's 60k training images
    recipe = {
        "name": "ban", "seed": 0,
        "data": {"name": "fashion-mnist", "val_fraction": 0.0, "train_fraction": size},
        "model": SETTINGS["student"], "teacher": {"path": str(teacher_run)},
        "method": {"name": "kd", "params": {"temperature": 4.0, "alpha": 0.7}},
        "train": {"epochs": 3, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "threads": 1,
                  "device": "cpu"},
    }  # fmt: skip

    def edgekd(args: list[str], name: str) -> float:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "edgekd", *args, "--runs-dir", str(base), "-q",
                            "--set", f"name={name}"], env=env, capture_output=True, text=True)  # fmt: skip
        if p.returncode:
            raise SystemExit(f"edgekd {' '.join(args)} failed:\n{p.stderr[-3000:]}")
        return time.perf_counter() - t0

    ban = base / "ban.yaml"
    ban.write_text(yaml.safe_dump({**recipe, "scheme": {"name": "born-again", "params": {"generations": 3}}}))
    walls: dict[str, list[float]] = {"cache": [], "no_cache": []}
    for r in range(1 if quick else 2):
        for key, flag in (("cache", "true"), ("no_cache", "false")):
            cache_dir = base / f"cache-{key}-{r}"
            walls[key].append(edgekd(["distill", str(ban), "--set", f"train.cache_teacher={flag}", "--set",
                                      f"train.cache_dir={cache_dir}"], f"ban-{key}-{r}"))  # fmt: skip
    out["born_again"] = {
        "generations": 3, "epochs_per_generation": 3, "train_fraction": size,
        "wall_s_cache": walls["cache"], "wall_s_no_cache": walls["no_cache"],
        "speedup": statistics.fmean(walls["no_cache"]) / statistics.fmean(walls["cache"]),
        "note": "whole `edgekd distill` commands (imports, data, 3 runs, evaluation, files); cold cache each time",
    }  # fmt: skip
    one = base / "one.yaml"
    one.write_text(yaml.safe_dump({**recipe, "train": {**recipe["train"], "epochs": 2}}))
    res: dict[str, list[float]] = {"1": [], "2": []}
    train_s: dict[str, list[float]] = {"1": [], "2": []}
    for r in range(1 if quick else 2):
        for nproc in ("1", "2"):
            name = f"np{nproc}-{r}"
            args = ["distill", str(one)] + (["--nproc", "2"] if nproc == "2" else [])
            res[nproc].append(edgekd(args, name))
            hist = json.loads((base / name / "metrics.json").read_text())["history"]
            train_s[nproc].append(sum(h["seconds"] for h in hist))
    a1 = json.loads((base / "np1-0" / "metrics.json").read_text())["final"]["test_accuracy"]
    a2 = json.loads((base / "np2-0" / "metrics.json").read_text())["final"]["test_accuracy"]
    out["torchrun"] = {
        "nproc": 2, "backend": "gloo (CPU)", "epochs": 2, "train_fraction": size,
        "wall_s_1proc": res["1"], "wall_s_2proc": res["2"], "train_s_1proc": train_s["1"], "train_s_2proc": train_s["2"],
        "train_speedup": statistics.fmean(train_s["1"]) / statistics.fmean(train_s["2"]),
        "around_training_s_1proc": [w - t for w, t in zip(res["1"], train_s["1"])],
        "test_accuracy_1proc": a1, "test_accuracy_2proc": a2,
        "note": "2 processes on a 2-core machine shared with other jobs: the speed-up is bounded by the free cores",
    }  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["edgekd", "edgekd-supervised", "torchdistill", "bare"])
    ap.add_argument("--tag", default="x")
    ap.add_argument("--epochs", type=int, default=None, help=f"3; {AUG_EPOCHS} with --augmented")
    ap.add_argument("--train-size", type=int, default=12800)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-extras", action="store_true")
    ap.add_argument("--augmented", action="store_true", help="crop + hflip on every side, 4 sides, no extras")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, WORK, args.epochs, args.tag, args.augmented)))
        return
    if args.epochs is None:
        args.epochs = AUG_EPOCHS if args.augmented else 3
    if args.quick:
        args.train_size, args.repeats, args.epochs = 2560, 1, 2
    ensure_torchdistill()
    prepare(WORK, args.train_size)
    if args.augmented:
        args.teacher = prepare_aug_teacher(WORK)
        return augmented_mode(args)
    sides = ["edgekd", "torchdistill", "bare"]
    steps = args.epochs * -(-args.train_size // 128)
    print(f"{args.repeats} x (edgekd, torchdistill, bare), {steps} steps each")
    runs = side_by_side(sides, args.repeats, args.epochs)
    sps = {s: statistics.fmean(r["samples_per_s"] for r in runs[s]) for s in sides}
    acc = {s: statistics.fmean(r["accuracy"] for r in runs[s]) for s in sides}
    paired = [e["samples_per_s"] / t["samples_per_s"] for e, t in zip(runs["edgekd"], runs["torchdistill"])]
    paired_bare = [e["samples_per_s"] / b["samples_per_s"] for e, b in zip(runs["edgekd"], runs["bare"])]
    result = {
        "ratio": sps["edgekd"] / sps["torchdistill"],
        "ratio_per_pair": paired,
        "edgekd_samples_per_s": sps["edgekd"],
        "torchdistill_samples_per_s": sps["torchdistill"],
        "bare_samples_per_s": sps["bare"],
        "bare_ratio": sps["edgekd"] / sps["bare"],
        "bare_ratio_per_pair": paired_bare,
        "edgekd_acc": acc["edgekd"],
        "torchdistill_acc": acc["torchdistill"],
        "bare_acc": acc["bare"],
        "runs": runs,
        "settings": {
            **SETTINGS,
            "train_size": args.train_size,
            "epochs": args.epochs,
            "steps": steps,
            "repeats": args.repeats,
            "order": "alternating edgekd, torchdistill, bare",
            "torchdistill": TD_PINS,
            "edgekd_cache": "teacher-output cache, built cold in every run",
        },  # fmt: skip
        "machine": machine(),
    }
    if not args.no_extras:
        result["extras"] = extras(args.quick)
    name = "throughput_vs_torchdistill" + ("_quick" if args.quick else "")
    path = write_results(name, result)
    rows = [[s, f"{sps[s]:.0f}", f"{sps[s] / sps['torchdistill']:.2f}x", f"{acc[s]:.4f}"] for s in sides]
    print_table(f"KD throughput, {steps} steps, batch 128, 1 thread (CPU)",
                ["side", "samples/s", "vs torchdistill", "test acc"], rows)  # fmt: skip
    if "extras" in result:
        ex = result["extras"]
        print(f"Born-Again 3 generations: {ex['born_again']['speedup']:.2f}x faster with the cache")
        print(f"torchrun 2 processes vs 1: {ex['torchrun']['train_speedup']:.2f}x training time")
        around = statistics.fmean(ex["torchrun"]["around_training_s_1proc"])
        print(f"`edgekd distill` (1 process): {around:.1f} s of wall time around the training epochs")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
