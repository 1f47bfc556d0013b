"""Distillation core v2 (issue 9): composed losses on named layers, stages, schemes, tasks, devices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgekd.cli import main
from edgekd.distill.compose import LossComposer
from edgekd.distill.losses import Step
from edgekd.distill.methods.base import Distiller
from edgekd.distill.runner import run_training
from edgekd.distill.train import Stage, Trainer, TrainingInterrupted
from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model
from edgekd.recipe import LossConfig, TrainConfig, recipe_from_dict
from edgekd.runfolder import RunFolder

CNN_T = {"name": "cnn", "kwargs": {"channels": [8, 16], "depthwise": False}}
CNN_S = {"name": "cnn", "kwargs": {"channels": [4, 8], "depthwise": False}}


def _recipe(**over) -> dict:
    base = {"name": "r", "data": {"name": "digits"}, "model": CNN_S,
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "optimizer": "adam"}}  # fmt: skip
    base.update(over)
    return base


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    r = recipe_from_dict(
        _recipe(
            name="teacher",
            model=CNN_T,
            train={"epochs": 6, "batch_size": 32, "lr": 0.01, "optimizer": "adam"},
        )
    )
    return run_training(r, runs, distill=False, progress=False).root


# --- composed losses --------------------------------------------------------------------------------
def test_composed_loss_equals_the_hand_computed_weighted_sum():
    torch.manual_seed(0)
    zs, zt = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 2, 1, 1])
    specs = [
        LossConfig("ce", 0.3),
        LossConfig("kd", 0.7, {"temperature": 2.0}),
        LossConfig("output-mse", 0.5),
    ]
    net = torch.nn.Linear(2, 3)
    terms = LossComposer(specs, net, net)(Step(x=torch.zeros(4, 2), y=y, student=zs, teacher=zt))

    def log_softmax(row, t=1.0):
        m = max(v / t for v in row)
        lse = m + math.log(sum(math.exp(v / t - m) for v in row))
        return [v / t - lse for v in row]

    ce = -sum(log_softmax(zs[i].tolist())[y[i]] for i in range(4)) / 4
    kd = 0.0
    for i in range(4):
        ls, lt = log_softmax(zs[i].tolist(), 2.0), log_softmax(zt[i].tolist(), 2.0)
        kd += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    kd = 4.0 * kd / 4
    mse = float(((zs - zt) ** 2).mean())
    assert set(terms) == {"ce", "kd", "output-mse"}
    assert terms["ce"].item() == pytest.approx(0.3 * ce, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.7 * kd, rel=1e-5)
    assert terms["output-mse"].item() == pytest.approx(0.5 * mse, rel=1e-5)


def test_hint_with_adapter_is_trained_checkpointed_resumed_and_not_exported(teacher, tmp_path):
    losses = [{"name": "kd", "weight": 0.5}, {"name": "ce", "weight": 0.5},
              {"name": "hint", "weight": 1.0, "student": "features.1", "teacher": "features.1"}]  # fmt: skip
    r = recipe_from_dict(
        _recipe(
            teacher={"path": str(teacher)},
            losses=losses,
            train={"epochs": 3, "batch_size": 32, "lr": 0.01, "optimizer": "adam"},
        )
    )
    full = run_training(r, tmp_path / "a", distill=True, progress=False)
    ck = torch.load(full.checkpoint, weights_only=True)
    adapter_keys = [k for k in ck["distillers"][0] if k.startswith("composer.adapters.2")]
    assert adapter_keys, "the 8->16 channel adapter must be in the checkpoint"
    hist = json.loads(full.metrics.read_text())["history"]
    assert "train_hint" in hist[0] and hist[-1]["train_hint"] < hist[0]["train_hint"]
    student, _ = load_model(full.student)
    assert not any("adapter" in k for k in student.state_dict())  # never exported with the student
    # resume: stop after epoch 1, continue, and get the identical result (adapter state restored)
    with pytest.raises(TrainingInterrupted):
        run_training(r, tmp_path / "b", distill=True, progress=False, stop_after_epoch=1)
    resumed = run_training(r, tmp_path / "b", distill=True, progress=False, resume=True)
    a, _ = load_model(full.student)
    b, _ = load_model(resumed.student)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    ca = torch.load(full.checkpoint, weights_only=True)["distillers"][0]
    cb = torch.load(resumed.checkpoint, weights_only=True)["distillers"][0]
    assert all(torch.equal(ca[k], cb[k]) for k in adapter_keys)


def _stages() -> list[dict]:
    return [
        {"name": "hint", "epochs": 1, "trainable": "features", "train": {"lr": 0.02},
         "losses": [{"name": "hint", "student": "features.1", "teacher": "features.1"}]},
        {"name": "kd", "epochs": 2, "losses": [{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}]},
    ]  # fmt: skip


def test_two_stages_second_starts_from_the_first(teacher, tmp_path):
    r = recipe_from_dict(_recipe(teacher={"path": str(teacher)}, stages=_stages()))
    with pytest.raises(TrainingInterrupted):
        run_training(r, tmp_path, distill=True, progress=False, stop_after_epoch=1)
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    after_stage1 = {
        k[len("student.") :]: v for k, v in ck["distillers"][0].items() if k.startswith("student.")
    }
    seed_model = build_model("cnn", input_shape=[1, 8, 8], num_classes=10, channels=[4, 8], depthwise=False)
    torch.manual_seed(0)
    fresh = build_model(
        "cnn", input_shape=[1, 8, 8], num_classes=10, channels=[4, 8], depthwise=False
    ).state_dict()
    del seed_model
    # stage 1 trains only `features`: the classifier is still at its initialisation, the features moved
    assert torch.equal(after_stage1["classifier.weight"], fresh["classifier.weight"])
    assert not torch.equal(after_stage1["features.0.0.weight"], fresh["features.0.0.weight"])
    # stage 2 starts from exactly those weights (checkpoint of stage 1 = the distiller of stage 2)
    assert torch.equal(
        ck["distillers"][1]["student.features.0.0.weight"], after_stage1["features.0.0.weight"]
    )
    run = run_training(r, tmp_path, distill=True, progress=False, resume=True)
    hist = json.loads(run.metrics.read_text())["history"]
    assert [h["stage"] for h in hist] == [1, 2, 2] and "train_hint" in hist[0] and "train_kd" in hist[1]
    final, _ = load_model(run.student)
    assert not torch.equal(final.state_dict()["classifier.weight"], fresh["classifier.weight"])


def test_resume_is_bit_identical_across_a_stage_boundary(teacher, tmp_path):
    r = recipe_from_dict(
        _recipe(teacher={"path": str(teacher)}, stages=_stages(), data={"name": "digits", "jitter": 1})
    )
    full = run_training(r, tmp_path / "a", distill=True, progress=False)
    for stop in (1, 2):  # at the boundary, and inside the second stage
        d = tmp_path / f"b{stop}"
        with pytest.raises(TrainingInterrupted):
            run_training(r, d, distill=True, progress=False, stop_after_epoch=stop)
        resumed = run_training(r, d, distill=True, progress=False, resume=True)
        a, _ = load_model(full.student)
        b, _ = load_model(resumed.student)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())), stop
        ha = [h["train_loss"] for h in json.loads(full.metrics.read_text())["history"]]
        hb = [h["train_loss"] for h in json.loads(resumed.metrics.read_text())["history"]]
        assert ha == hb


# --- schemes ----------------------------------------------------------------------------------------
class _TwoNets(Distiller):
    """A fake scheme: two independent networks, each with its own optimizer, in one loop."""

    needs_teacher = False

    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(4, 3))
        self.other = torch.nn.Linear(4, 3)
        self.calls = 0

    def param_groups(self):
        return {"a": list(self.student.parameters()), "b": list(self.other.parameters())}

    def forward_train(self, x, y):
        self.calls += 1
        za, zb = self.student(x.flatten(1)), self.other(x.flatten(1))
        return za, {
            "a": torch.nn.functional.cross_entropy(za, y),
            "b": torch.nn.functional.cross_entropy(zb, y),
        }


def test_the_loop_asks_the_scheme_for_its_networks_and_optimizers(tmp_path):
    from edgekd.data import ArrayDataset

    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.standard_normal((40, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 40))
    fake = _TwoNets()
    before = [p.detach().clone() for p in fake.parameters()]
    cfg = recipe_from_dict({"train": {"epochs": 2, "batch_size": 10, "lr": 0.1}}).train
    run = RunFolder(tmp_path).ensure()
    Trainer([Stage("s", fake, cfg)], None, run, progress=False).fit(data)
    assert fake.calls == 8
    assert all(not torch.equal(a, b) for a, b in zip(before, fake.parameters()))
    ck = torch.load(run.checkpoint, weights_only=True)
    assert set(ck["optimizers"]) == {"a", "b"} and set(ck["schedulers"]) == {"a", "b"}


def test_two_peers_trained_together_with_two_optimizers(tmp_path):
    r = recipe_from_dict(_recipe(method={"name": "dml", "params": {"peers": 2}}))
    run = run_training(r, tmp_path, distill=False, progress=False)
    ck = torch.load(run.checkpoint, weights_only=True)
    assert set(ck["optimizers"]) == {"peer0", "peer1"}
    hist = json.loads(run.metrics.read_text())["history"]
    assert {"train_peer0_ce", "train_peer0_kl", "train_peer1_ce", "train_peer1_kl"} <= set(hist[0])
    nets = json.loads((run.root / "networks.json").read_text())
    assert nets["networks"] == {"peer0": "model.pt", "peer1": "network-peer1.pt"}
    p0, _ = load_model(run.model)
    p1, _ = load_model(run.root / "network-peer1.pt")
    assert not torch.equal(p0.classifier.weight, p1.classifier.weight)  # two different networks
    from edgekd.networks import list_networks

    assert list_networks(run.root) == {
        "peer0": run.model.resolve(),
        "peer1": (run.root / "network-peer1.pt").resolve(),
    }


def test_profile_all_networks_of_a_dml_run(tmp_path, run_cli):
    r = recipe_from_dict(_recipe(method={"name": "dml", "params": {"peers": 2}}, train={"epochs": 1}))
    run = run_training(r, tmp_path, distill=False, progress=False)
    args = [
        "profile",
        str(run.root),
        "--all-networks",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--runtime",
        "pytorch",
    ]
    code, err = run_cli(args)
    assert code == 0, err
    report = json.loads((run.root / "report-networks.json").read_text())
    names = sorted(Path(a["path"]).name for a in report["artifacts"])
    assert names == ["model.pt", "network-peer1.pt"]


def test_a_two_step_teacher_chain(teacher, tmp_path):
    r = recipe_from_dict(_recipe(teacher={"path": str(teacher)}, method={"name": "kd", "params": {"alpha": 1.0}},
                                 scheme={"name": "born-again", "params": {"generations": 2}}))  # fmt: skip
    run = run_training(r, tmp_path, distill=True, progress=False)
    g1, g2 = run.root / "gen-1", run.root / "gen-2"
    assert (g1 / "teacher.pt").read_bytes() == (teacher / "model.pt").read_bytes()
    assert (g2 / "teacher.pt").read_bytes() == (g1 / "student.pt").read_bytes()  # gen 1 taught gen 2
    assert run.student.read_bytes() == (g2 / "student.pt").read_bytes()
    nets = json.loads((run.root / "networks.json").read_text())
    assert nets["networks"] == {"gen-1": "gen-1/student.pt", "gen-2": "gen-2/student.pt"}
    m = json.loads(run.metrics.read_text())
    assert set(m["runs"]) == {"gen-1", "gen-2"}
    assert m["runs"]["gen-1"]["test_accuracy"] > 0.2 and m["final"]["test_accuracy"] > 0.2  # chance: 0.1


def test_an_ensemble_of_teachers_is_combined_by_the_rule(teacher, tmp_path):
    from edgekd.models.ensemble import WeightedEnsemble

    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    assert torch.allclose(WeightedEnsemble([a, b], "mean-logits")(x), (a(x) + b(x)) / 2)
    probs = (a(x).softmax(1) + b(x).softmax(1)) / 2
    assert torch.allclose(WeightedEnsemble([a, b], "mean-probs")(x).softmax(1), probs, atol=1e-6)
    r = recipe_from_dict(_recipe(teacher={"paths": [str(teacher), str(teacher)], "combine": "mean-probs"},
                                 method={"name": "kd"}))  # fmt: skip
    run = run_training(r, tmp_path, distill=True, progress=False)
    assert (run.root / "teacher-2.pt").exists() and json.loads(run.metrics.read_text())["final"][
        "test_accuracy"
    ] > 0.2


# --- tasks and privileged inputs ----------------------------------------------------------------------
def _ae_npz(path, privileged: bool = False) -> None:
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, 16))
    x = (rng.standard_normal((300, 3)) @ basis).astype(np.float32)
    xt = (rng.standard_normal((100, 3)) @ basis).astype(np.float32)
    yt = np.zeros(100, np.int64)
    xt[:20] += rng.standard_normal((20, 16)).astype(np.float32) * 3  # anomalies off the subspace
    yt[:20] = 1
    arrays = {"x": x, "x_test": xt, "y_test": yt, "task": np.array("reconstruction")}
    np.savez(path, **arrays)


class TinyAE(torch.nn.Module):
    def __init__(self, input_shape=(16,), num_classes=0, hidden=3):
        super().__init__()
        d = int(np.prod(input_shape))
        self.net = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(), torch.nn.Linear(8, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, 8), torch.nn.ReLU(), torch.nn.Linear(8, d))  # fmt: skip

    def forward(self, x):
        return self.net(x)


def test_a_reconstruction_run_scores_anomalies(tmp_path):
    _ae_npz(tmp_path / "ae.npz")
    r = recipe_from_dict(_recipe(data={"name": "npz", "options": {"path": str(tmp_path / "ae.npz")}},
                                 model={"name": "test_core_v2:TinyAE", "kwargs": {"hidden": 3}},
                                 train={"epochs": 15, "batch_size": 32, "lr": 0.01, "optimizer": "adam"}))  # fmt: skip
    run = run_training(r, tmp_path, distill=False, progress=False)
    info = json.loads(run.data_info.read_text())
    assert info["task"] == "reconstruction"
    m = json.loads(run.metrics.read_text())
    assert "train_recon-mse" in m["history"][0] and "val_recon_error" in m["history"][0]
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    assert m["final"]["test_auc"] > 0.9  # anomalies reconstruct worse


# --- bad input --------------------------------------------------------------------------------------
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
def test_bad_core_v2_input_is_one_line_and_writes_nothing(teacher, tmp_path, run_cli, over, pattern):
    import re

    rec = _recipe(teacher={"path": str(teacher)}, method={"name": "supervised"})
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


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, run_cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(_recipe(train={"epochs": 1, "device": "cuda"})))
    code, err = run_cli(["train", str(p), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert code == 2 and "train.device=cuda: no CUDA GPU" in err


def test_edgekd_methods_lists_losses_methods_and_schemes(run_cli):
    code, _ = run_cli(["methods", "--json"])
    assert code == 0


def test_methods_json_names_papers(capsys):
    main(["methods", "--json"])
    out = json.loads(capsys.readouterr().out)
    losses = {r["name"]: r for r in out["losses"]}
    assert losses["kd"]["paper"].startswith("Hinton") and losses["hint"]["features"]
    assert {"dml", "netaug"} <= {m["name"] for m in out["methods"]}
    assert {"kd", "supervised", "compose"} <= {p["name"] for p in out["presets"]}
    assert {"single", "born-again"} <= {s["name"] for s in out["schemes"]}


def test_train_config_device_default_is_auto():
    assert TrainConfig().device == "auto"


def test_an_autoencoder_runs_end_to_end_train_export_profile(tmp_path, run_cli):
    """Synthetic windows (N, 8, 4) on a low-dimensional subspace, anomalies off it: teacher, distilled
    fc-ae student, tflite-micro export with reconstruction checks, and the profile report."""
    rng = np.random.default_rng(1)
    basis = rng.standard_normal((2, 32))
    x = (rng.standard_normal((400, 2)) @ basis).reshape(400, 8, 4).astype(np.float32)
    xt = (rng.standard_normal((120, 2)) @ basis).reshape(120, 8, 4).astype(np.float32)
    yt = np.zeros(120, np.int64)
    xt[:30] += 2.0 * rng.standard_normal((30, 8, 4)).astype(np.float32)
    yt[:30] = 1
    np.savez(tmp_path / "w.npz", x=x, x_test=xt, y_test=yt, task=np.array("reconstruction"))
    recipe = {
        "name": "ae", "data": {"name": "npz", "options": {"path": str(tmp_path / "w.npz")}},
        "model": {"name": "fc-ae", "kwargs": {"hidden": [16], "latent": 4}},
        "teacher": {"model": {"name": "fc-ae", "kwargs": {"hidden": [64], "latent": 4}}},
        "losses": [{"name": "recon-mse", "weight": 0.5}, {"name": "output-mse", "weight": 0.5}],
        "train": {"epochs": 12, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
        "export": {"targets": ["tflite-micro"]}, "profile": {"runs": 2},
    }  # fmt: skip
    p = tmp_path / "ae.yaml"
    p.write_text(yaml.safe_dump(recipe))
    code, err = run_cli(["run", str(p), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert code == 0, err
    run = tmp_path / "runs" / "ae"
    assert json.loads((run / "data.json").read_text())["task"] == "reconstruction"
    assert json.loads((run / "metrics.json").read_text())["final"]["test_auc"] > 0.8
    checks = json.loads((run / "export" / "tflite-micro" / "export.json").read_text())["checks"]
    assert checks["int8_score_spearman"] > 0.8 and checks["int8_sqnr_db"] > 10
    assert "int8_top1_agreement" not in checks  # argmax over reconstructed values means nothing
    report = json.loads((run / "report.json").read_text())
    assert report["artifacts"] and (run / "report.html").exists()


def test_privileged_inputs_reach_the_teacher_only(tmp_path):
    """Lopez-Paz et al. 2016: the teacher reads x* (all 6 features), the student only x (2 noisy ones)."""
    rng = np.random.default_rng(0)
    n = 600
    x_star = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x_star[:, :3].sum(1) > 0).astype(np.int64)
    x = (x_star[:, :2] + 0.5 * rng.standard_normal((n, 2))).astype(np.float32)
    np.savez(tmp_path / "teacher.npz", x=x_star[:400], y=y[:400], x_test=x_star[400:], y_test=y[400:])
    np.savez(tmp_path / "student.npz", x=x[:400], y=y[:400], x_test=x[400:], y_test=y[400:],
             priv_full=x_star[:400], priv_full_test=x_star[400:])  # fmt: skip
    mlp = {"name": "mlp", "kwargs": {"hidden": [16]}}
    train = {"epochs": 5, "batch_size": 32, "optimizer": "adam", "lr": 0.01}
    t = recipe_from_dict({"name": "t", "data": {"name": "npz", "options": {"path": str(tmp_path / "teacher.npz")}},
                          "model": mlp, "train": train})  # fmt: skip
    t_run = run_training(t, tmp_path, distill=False, progress=False)
    s = recipe_from_dict({"name": "s", "data": {"name": "npz", "options": {"path": str(tmp_path / "student.npz")}},
                          "model": mlp, "train": train, "method": {"name": "kd", "params": {"alpha": 0.5}},
                          "teacher": {"path": str(t_run.root), "input": "full"}})  # fmt: skip
    run = run_training(s, tmp_path, distill=True, progress=False)
    info = json.loads(run.data_info.read_text())
    assert info["extra_inputs"] == ["full"] and info["input_shape"] == [2]
    student, record = load_model(run.student)
    assert record["kwargs"]["input_shape"] == [2]  # export sees only the student's input
    assert student(torch.zeros(1, 2)).shape == (1, 2)
    bad = recipe_from_dict(
        {**s.to_dict(), "name": "bad", "teacher": {"path": str(t_run.root), "input": "ful"}}
    )
    with pytest.raises(
        EdgekdError, match=r"teacher.input='ful' is not a privileged input of the data set \(has: full\)"
    ):
        run_training(bad, tmp_path, distill=True, progress=False)


def test_export_all_networks_of_a_born_again_run(teacher, tmp_path, run_cli):
    r = _recipe(teacher={"path": str(teacher)}, method={"name": "kd"}, scheme={"name": "born-again", "params": {"generations": 2}},
                train={"epochs": 1, "batch_size": 64, "lr": 0.01, "optimizer": "adam"})  # fmt: skip
    run = run_training(recipe_from_dict(r), tmp_path, distill=True, progress=False)
    code, err = run_cli(["export", str(run.root), "--format", "onnx", "--all-networks", "--quiet"])
    assert code == 0, err
    for gen in ("gen-1", "gen-2"):
        assert (run.root / "export" / f"onnx-{gen}" / "model.onnx").exists()


def test_noisy_sequential_generations_with_an_ensemble_teacher(tmp_path):
    """Seed: autoencoder generations, each learning from the previous ones' mean reconstruction."""
    rng = np.random.default_rng(2)
    basis = rng.standard_normal((2, 32))
    x = (rng.standard_normal((300, 2)) @ basis).reshape(300, 8, 4).astype(np.float32)
    np.savez(tmp_path / "w.npz", x=x, task=np.array("reconstruction"))
    r = recipe_from_dict({
        "name": "seq", "data": {"name": "npz", "options": {"path": str(tmp_path / "w.npz")}},
        "model": {"name": "fc-ae", "kwargs": {"hidden": [16], "latent": 4}},
        "method": {"name": "noisy-sequential", "params": {"alpha": 0.5, "fraction": 0.5}},
        "scheme": {"name": "born-again", "params": {"generations": 3, "ensemble": True}},
        "train": {"epochs": 2, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
    })  # fmt: skip
    run = run_training(r, tmp_path, distill=False, progress=False)
    hist = {
        g: json.loads((run.root / g / "metrics.json").read_text())["history"][0]
        for g in ("gen-1", "gen-2", "gen-3")
    }
    assert "train_previous" not in hist["gen-1"]  # generation 1: a denoising autoencoder
    assert "train_previous" in hist["gen-2"] and "train_previous" in hist["gen-3"]
    assert (run.root / "gen-3" / "teacher-2.pt").exists()  # generations 1 and 2 teach generation 3
    assert (run.root / "gen-3" / "teacher.pt").read_bytes() == (run.root / "gen-1" / "model.pt").read_bytes()
    assert run.model.read_bytes() == (run.root / "gen-3" / "student.pt").read_bytes()


def test_methods_that_do_not_read_privileged_inputs_still_train_on_such_data(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "p.npz", x=x, y=y, priv_extra=rng.standard_normal((200, 3)).astype(np.float32))
    r = recipe_from_dict({"name": "d", "data": {"name": "npz", "options": {"path": str(tmp_path / "p.npz")}},
                          "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "method": {"name": "dml"},
                          "train": {"epochs": 1, "batch_size": 32}})  # fmt: skip
    run = run_training(r, tmp_path, distill=False, progress=False)
    assert "train_peer1_kl" in json.loads(run.metrics.read_text())["history"][0]
