"""edgekd.distill.methods and edgekd.distill.schemes end to end on digits with tiny CNNs.

Feature losses composed in recipes; the ONE, BYOT, DML, privileged and noisy-sequential methods; the
teacher chain, ensembles of teachers, ensemble selection, specialists and Born-Again ensembles, mostly
from the CLI; ONE and BYOT students export to TFLite Micro; bad input is one clear line (issue 11).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from _train import cnn_recipe

from edgekd.cli import main
from edgekd.distill.runner import run_training
from edgekd.errors import EdgekdError
from edgekd.models import load_model
from edgekd.recipe import recipe_from_dict

CNN_T = {"name": "cnn", "kwargs": {"channels": [8, 16, 16], "depthwise": False}}
CNN_S = {"name": "cnn", "kwargs": {"channels": [4, 8, 8], "depthwise": False}}
TRAIN = {"epochs": 2, "batch_size": 32, "lr": 0.01, "optimizer": "adam"}


def recipe(**over) -> dict:
    base = {"name": "r", "data": {"name": "digits"}, "model": CNN_S, "train": dict(TRAIN)}
    base.update(over)
    return base


def cli(tmp_path, args: list[str], rec: dict, capsys, runs=None) -> tuple[int, str]:
    p = tmp_path / f"{rec['name']}.yaml"
    p.write_text(yaml.safe_dump(rec))
    try:
        main([args[0], str(p), "--runs-dir", str(runs or tmp_path / "runs"), "-q", *args[1:]])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    return code, capsys.readouterr().err.strip()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher and a two-model library (trained once for the module)."""
    root = tmp_path_factory.mktemp("runs")
    for name, model, seed, epochs in (
        ("teacher", CNN_T, 0, 5),
        ("lib-a", CNN_S, 1, 2),
        ("lib-b", CNN_T, 2, 2),
    ):
        r = recipe_from_dict(recipe(name=name, model=model, seed=seed, train={**TRAIN, "epochs": epochs}))
        run_training(r, root, distill=False, progress=False)
    return root


def final(run) -> dict:
    return json.loads((run / "metrics.json").read_text())["final"]


# --- feature losses composed in recipes ---------------------------------------------------------------
@pytest.mark.slow
def test_every_feature_loss_trains_from_a_recipe(runs, tmp_path, capsys):
    losses = [
        {"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1},
        {"name": "at", "student": "features.0,features.1", "teacher": "features.0,features.1", "weight": 10},
        {"name": "nst", "student": "features.1", "teacher": "features.1"},
        {"name": "mmd", "student": "features.2", "teacher": "features.2", "params": {"kernel": "linear"}},
        {"name": "fsp", "student": "features.0,features.1", "teacher": "features.0,features.1"},
        {"name": "rkd-distance", "student": "flatten", "teacher": "flatten"},
        {"name": "rkd-angle", "student": "flatten", "teacher": "flatten"},
        {"name": "sp", "student": "features.2", "teacher": "features.2"},
        {"name": "ab", "student": "features.1.1", "teacher": "features.1.1", "weight": 0.1},
        {"name": "sparsity", "student": "features.2.1", "teacher": "features.2.1", "weight": 0.1},
        {"name": "gradient-at", "weight": 10},
    ]  # fmt: skip
    code, err = cli(tmp_path, ["distill"], recipe(name="all", teacher={"path": str(runs / "teacher")},
                                                  losses=losses), capsys)  # fmt: skip
    assert code == 0, err
    run = tmp_path / "runs" / "all"
    hist = json.loads((run / "metrics.json").read_text())["history"]
    for term in (
        "at",
        "nst",
        "mmd",
        "fsp",
        "rkd-distance",
        "rkd-angle",
        "sp",
        "ab",
        "sparsity",
        "gradient-at",
    ):
        assert f"train_{term}" in hist[0] and np.isfinite(hist[-1][f"train_{term}"]), term
    assert hist[-1]["train_at"] < hist[0]["train_at"] and hist[-1]["train_fsp"] < hist[0]["train_fsp"]
    ck = torch.load(run / "checkpoint.pt", weights_only=True)["distillers"][0]
    assert any(k.startswith("composer.adapters.5_0") for k in ck)  # fsp: one adapter per path (4 -> 8 ch)
    assert not any(k.startswith("composer.adapters.2") for k in ck)  # at: channel-agnostic, no adapter
    assert final(run)["test_accuracy"] > 0.25  # chance is 0.1; eleven losses at once, two epochs
    student, _ = load_model(run / "student.pt")
    assert set(student.state_dict()) == set(load_model(runs / "lib-a" / "model.pt")[0].state_dict())


def test_factor_transfer_stage_two_uses_the_paraphraser_stage_one_trained(runs, tmp_path, capsys):
    pair = {"student": "features.2", "teacher": "features.2"}
    stages = [{"name": "paraphraser", "epochs": 2, "losses": [{"name": "ft-paraphraser", "teacher": "features.2"}]},
              {"name": "transfer", "epochs": 1, "losses": [{"name": "ce"}, {"name": "factor-transfer", **pair}]}]  # fmt: skip
    code, err = cli(tmp_path, ["distill"], recipe(name="ft", teacher={"path": str(runs / "teacher")},
                                                  stages=stages), capsys)  # fmt: skip
    assert code == 0, err
    ck = torch.load(tmp_path / "runs" / "ft" / "checkpoint.pt", weights_only=True)["distillers"]
    p1 = {k.split("paraphraser.", 1)[1]: v for k, v in ck[0].items() if ".paraphraser." in k}
    p2 = {k.split("paraphraser.", 1)[1]: v for k, v in ck[1].items() if ".paraphraser." in k}
    assert p1 and p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)  # shared, frozen
    assert any(k.startswith("composer.owned.1.translator") for k in ck[1])
    hist = json.loads((tmp_path / "runs" / "ft" / "metrics.json").read_text())["history"]
    assert hist[1]["train_ft-paraphraser"] < hist[0]["train_ft-paraphraser"]  # reconstruction learns
    assert "train_factor-transfer" in hist[2]


# --- methods: ONE and BYOT, exported to TFLite Micro -------------------------------------------------
@pytest.mark.parametrize(
    "method", [{"name": "one", "params": {"branches": 3}}, {"name": "byot", "params": {"export_exit": 0}}]
)
@pytest.mark.slow
def test_one_and_byot_train_and_export_one_plain_student(tmp_path, capsys, method):
    from edgekd.export import export_run

    code, err = cli(tmp_path, ["train"], recipe(name=method["name"], method=method,
                                                train={**TRAIN, "epochs": 3}), capsys)  # fmt: skip
    assert code == 0, err
    run = tmp_path / "runs" / method["name"]
    hist = json.loads((run / "metrics.json").read_text())["history"]
    terms = {"one": ("train_ce", "train_ensemble_ce", "train_kd"),
             "byot": ("train_ce", "train_aux_ce", "train_aux_kd", "train_aux_feature")}[method["name"]]  # fmt: skip
    assert all(t in hist[0] for t in terms)
    assert final(run)["test_accuracy"] > 0.5
    nets = json.loads((run / "networks.json").read_text())["networks"]
    if method["name"] == "one":
        assert nets == {
            "branch0": "model.pt",
            "branch1": "network-branch1.pt",
            "branch2": "network-branch2.pt",
        }
        b0, _ = load_model(run / "model.pt")
        b1, _ = load_model(run / "network-branch1.pt")
        assert torch.equal(b0.features[0][0].weight, b1.features[0][0].weight)  # the shared trunk
        assert not torch.equal(b0.classifier.weight, b1.classifier.weight)
    else:  # the early exit after block 0 was asked for: a plain network of its own
        assert nets == {"main": "model.pt", "exit0": "network-exit0.pt"}
        exit0, rec0 = load_model(run / "network-exit0.pt")
        assert rec0["name"] == "cnn-early-exit" and len(exit0.features) == 1
        from edgekd.data import load_data

        test = load_data("digits", seed=0).test
        with torch.no_grad():
            acc = (exit0(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean()
        assert acc > 0.3  # chance is 0.1
    model, record = load_model(run / "model.pt")
    assert record["name"] == "cnn" and not any("gate" in k or "heads" in k for k in model.state_dict())
    out = export_run(run, target="tflite-micro")
    info = json.loads((out / "export.json").read_text())
    assert info["checks"]["int8_accuracy"] > 0.4 and (out / "model_data.cc").exists()


def test_privileged_teacher_reads_x_star_and_the_student_only_x(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 3, n)
    clean = np.eye(3)[y] * 2 + 0.1 * rng.standard_normal((n, 3))
    x = (clean + 1.5 * rng.standard_normal((n, 3))).astype(np.float32)  # noisy view for the student
    np.savez(tmp_path / "t.npz", x=clean.astype(np.float32), y=y)
    np.savez(tmp_path / "s.npz", x=x, y=y, priv_clean=clean.astype(np.float32))
    mlp = {"name": "mlp", "kwargs": {"hidden": [16]}}
    code, err = cli(tmp_path, ["train"], recipe(name="pt", model=mlp, data={"name": "npz", "options": {"path": str(tmp_path / "t.npz")}}), capsys)  # fmt: skip
    assert code == 0, err
    rec = recipe(name="ps", model=mlp, data={"name": "npz", "options": {"path": str(tmp_path / "s.npz")}},
                 teacher={"path": str(tmp_path / "runs" / "pt"), "input": "clean"},
                 method={"name": "privileged", "params": {"imitation": 0.7, "temperature": 2.0}})  # fmt: skip
    code, err = cli(tmp_path, ["distill"], rec, capsys)
    assert code == 0, err
    hist = json.loads((tmp_path / "runs" / "ps" / "metrics.json").read_text())["history"]
    assert "train_generalized-kd" in hist[0] and "train_ce" in hist[0]
    student, _ = load_model(tmp_path / "runs" / "ps" / "student.pt")
    assert student(torch.zeros(1, 3)).shape == (1, 3)


def test_two_peers_trained_together_with_two_optimizers(tmp_path):
    r = recipe_from_dict(cnn_recipe(method={"name": "dml", "params": {"peers": 2}}))
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


# --- schemes ---------------------------------------------------------------------------------------
def test_ensemble_selection_picks_from_the_library_and_teaches(runs, tmp_path, capsys):
    lib = [str(runs / "teacher"), str(runs / "lib-a"), str(runs / "lib-b")]
    rec = recipe(name="es", method={"name": "kd"},
                 scheme={"name": "ensemble-selection", "params": {"library": lib, "size": 4, "init": 1, "bags": 2, "bag_fraction": 0.67}})  # fmt: skip
    code, err = cli(tmp_path, ["train"], rec, capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "es"
    sel = json.loads((run / "selection.json").read_text())
    assert len(sel["library"]) == 3 and len(sel["bags"]) == 2
    assert sum(sel["weights"].values()) == 2 * (4 + 1)  # init + size picks in each bag, with replacement
    best = max(x["val_accuracy"] for x in sel["library"])
    assert sel["ensemble_val_accuracy"] >= best - 1e-9  # selection never ends below its best start
    ens, rec_e = load_model(run / "ensemble.pt")
    assert rec_e["name"] == "ensemble" and len(ens.members) == len(sel["weights"])
    assert (run / "student" / "teacher.pt").read_bytes() == (run / "ensemble.pt").read_bytes()
    assert (run / "model.pt").exists() and final(run / "student")["test_accuracy"] > 0.5


def test_specialists_cluster_confusable_classes_with_a_dustbin(runs, tmp_path, capsys):
    rec = recipe(name="sp", method={"name": "kd"}, teacher={"path": str(runs / "teacher")},
                 scheme={"name": "specialists", "params": {"subsets": 2, "epochs": 1}})  # fmt: skip
    code, err = cli(tmp_path, ["distill"], rec, capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "sp"
    info = json.loads((run / "specialists.json").read_text())
    flat = sorted(c for s in info["subsets"] for c in s)
    assert flat == list(range(10)) and len(info["subsets"]) == 2  # a partition of the classes
    spec, record = load_model(run / "specialist-1" / "model.pt")
    assert record["kwargs"]["num_classes"] == len(info["subsets"][0]) + 1  # subset + dustbin
    assert info["combined_test_accuracy"] > 0.5 and (run / "student.pt").exists()


@pytest.mark.slow
def test_born_again_ensemble_records_every_generation(runs, tmp_path, capsys):
    rec = recipe(name="ban", method={"name": "kd", "params": {"alpha": 1.0}}, teacher={"path": str(runs / "teacher")},
                 scheme={"name": "born-again-ensemble", "params": {"generations": 2}}, train={**TRAIN, "epochs": 1})  # fmt: skip
    code, err = cli(tmp_path, ["distill"], rec, capsys)
    assert code == 0, err
    info = json.loads((tmp_path / "runs" / "ban" / "ensemble.json").read_text())
    assert [g["generation"] for g in info["generations"]] == [1, 2]
    assert "ensemble_1_2_test_accuracy" in info["generations"][1]
    ens, _ = load_model(tmp_path / "runs" / "ban" / "ensemble.pt")
    assert len(ens.members) == 2


@pytest.mark.slow
def test_a_two_step_teacher_chain(cnn_teacher, tmp_path):
    r = recipe_from_dict(cnn_recipe(teacher={"path": str(cnn_teacher)}, method={"name": "kd", "params": {"alpha": 1.0}},
                                    scheme={"name": "born-again", "params": {"generations": 2}}))  # fmt: skip
    run = run_training(r, tmp_path, distill=True, progress=False)
    g1, g2 = run.root / "gen-1", run.root / "gen-2"
    assert (g1 / "teacher.pt").read_bytes() == (cnn_teacher / "model.pt").read_bytes()
    assert (g2 / "teacher.pt").read_bytes() == (g1 / "student.pt").read_bytes()  # gen 1 taught gen 2
    assert run.student.read_bytes() == (g2 / "student.pt").read_bytes()
    nets = json.loads((run.root / "networks.json").read_text())
    assert nets["networks"] == {"gen-1": "gen-1/student.pt", "gen-2": "gen-2/student.pt"}
    m = json.loads(run.metrics.read_text())
    assert set(m["runs"]) == {"gen-1", "gen-2"}
    assert m["runs"]["gen-1"]["test_accuracy"] > 0.2 and m["final"]["test_accuracy"] > 0.2  # chance: 0.1


def test_an_ensemble_of_teachers_is_combined_by_the_rule(cnn_teacher, tmp_path):
    from edgekd.models.ensemble import WeightedEnsemble

    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    assert torch.allclose(WeightedEnsemble([a, b], "mean-logits")(x), (a(x) + b(x)) / 2)
    probs = (a(x).softmax(1) + b(x).softmax(1)) / 2
    assert torch.allclose(WeightedEnsemble([a, b], "mean-probs")(x).softmax(1), probs, atol=1e-6)
    r = recipe_from_dict(cnn_recipe(teacher={"paths": [str(cnn_teacher), str(cnn_teacher)], "combine": "mean-probs"},
                                    method={"name": "kd"}))  # fmt: skip
    run = run_training(r, tmp_path, distill=True, progress=False)
    assert (run.root / "teacher-2.pt").exists() and json.loads(run.metrics.read_text())["final"][
        "test_accuracy"
    ] > 0.2


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


# --- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cmd, over, pattern",
    [
        ("distill", {"losses": [{"name": "at", "student": "classifier", "teacher": "classifier"}]},
         r"attention transfer needs \(C, H, W\) feature maps; the student layer gives \(10,\)"),
        ("distill", {"losses": [{"name": "at", "student": "features.0", "teacher": "features.1"}]},
         r"differ in size; pick layers at the same resolution"),
        ("distill", {"losses": [{"name": "fsp", "student": "features.0", "teacher": "features.0"}]},
         r"fsp relates two layers"),
        ("distill", {"losses": [{"name": "mmd", "student": "features.1", "teacher": "features.1",
                                 "params": {"kernel": "rbf"}}]}, r"params.kernel='rbf'; valid: poly, linear"),
        ("train", {"scheme": {"name": "ensemble-selection", "params": {"library": ["a", "b"], "init": 3}}},
         r"init=3: asks for 3 model\(s\) but the library holds 2"),
        ("train", {"scheme": {"name": "ensemble-selection", "params": {"library": ["a"]}}},
         r"library holds 1 model\(s\); ensemble selection needs at least 2"),
        ("distill", {"scheme": {"name": "specialists", "params": {"subsets": 6}}, "method": {"name": "kd"}},
         r"subsets=6: more specialist subsets than the 10 classes"),
        ("train", {"method": {"name": "one"}, "model": {"name": "mlp", "kwargs": {"hidden": [8]}}},
         r"method one: needs a student made of `features` blocks"),
        ("train", {"method": {"name": "byot", "params": {"exits": [2]}}}, r"exits=\[2\]: give distinct"),
    ],
)  # fmt: skip
def test_bad_method_input_is_one_line(runs, tmp_path, capsys, cmd, over, pattern):
    rec = recipe(name="bad", **({"teacher": {"path": str(runs / "teacher")}} if cmd == "distill" else {}))
    rec.update(over)
    code, err = cli(tmp_path, [cmd], rec, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err


def test_example_recipes_are_valid_and_name_registered_parts():
    from pathlib import Path

    from edgekd.distill.losses import LOSSES, is_preset
    from edgekd.distill.methods import METHODS
    from edgekd.distill.schemes import SCHEMES
    from edgekd.recipe import load_recipe

    paths = sorted((Path(__file__).resolve().parent.parent / "examples").glob("methods_*.yaml"))
    assert len(paths) >= 5
    for p in paths:
        r = load_recipe(p)
        assert is_preset(r.method.name) or r.method.name in METHODS, r.method.name
        SCHEMES.get(r.scheme.name)
        for spec in [*r.losses, *(x for st in r.stages for x in st.losses)]:
            LOSSES.get(spec.name)
