"""edgekd.data.smd: the loader on the real files and synthetic trees (bad input), sliding windows."""

import os

import numpy as np
import pytest

from edgekd.data import DATASETS
from edgekd.data.smd import list_machines, load_machine, load_smd, smd_root, smd_splits
from edgekd.data.windows import sliding_windows, step_scores, window_labels, window_starts
from edgekd.errors import EdgekdError


@pytest.fixture
def smd_dir():
    root = smd_root()
    if not list_machines() and not os.environ.get("CI"):
        pytest.skip(f"SMD not in EDGEKD_DATA_DIR ({root})")
    assert list_machines(), f"CI is set but SMD is missing from {root}"
    return root


def _count(path):
    """Rows, values on the first row and number of '1' lines, counted without numpy."""
    lines = [ln for ln in path.read_text().split("\n") if ln != ""]
    return len(lines), len(lines[0].split(",")), sum(ln.strip() == "1" for ln in lines)


@pytest.mark.slow
def test_real_files_rows_widths_labels(smd_dir):
    names = list_machines()
    assert names == sorted(p[:-4] for p in os.listdir(smd_dir / "train"))  # natural == lexical here
    for name in names:
        m = load_machine(name)
        rows, width, _ = _count(smd_dir / "train" / f"{name}.txt")
        assert m.train.shape == (rows, width) and width == 38
        rows_t, width_t, _ = _count(smd_dir / "test" / f"{name}.txt")
        assert m.test.shape == (rows_t, width_t)
        n_lab, _, n_ones = _count(smd_dir / "test_label" / f"{name}.txt")
        assert len(m.labels) == n_lab == rows_t and int(m.labels.sum()) == n_ones
        assert m.interpretation and all(a <= b for a, b, _ in m.interpretation)
        first = (smd_dir / "train" / f"{name}.txt").read_text().split("\n", 1)[0].split(",")
        np.testing.assert_allclose(m.train[0], np.array(first, dtype=np.float32))


@pytest.mark.slow
def test_real_split_normalisation_and_windows(smd_dir):
    name = list_machines()[0]
    raw = load_machine(name)
    d = load_smd(name, length=50, stride=7, val_fraction=0.25)
    m = d.machines[0]
    n_val = int(round(len(raw.train) * 0.25))
    assert len(m.val) == n_val and len(m.fit) == len(raw.train) - n_val
    lo, hi = raw.train[:-n_val].min(0), raw.train[:-n_val].max(0)
    rng = np.where(hi > lo, hi - lo, 1.0)
    # statistics from the fit part only, applied to the validation (end of train) and test parts
    np.testing.assert_allclose(m.val, (raw.train[-n_val:] - lo) / rng, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.test, (raw.test - lo) / rng, rtol=1e-5, atol=1e-6)
    assert m.fit.min() >= 0 and m.fit.max() <= 1 + 1e-6
    x, starts, _ = d.windows("fit")
    assert x.shape == ((len(m.fit) - 50) // 7 + 1, 50, 38)
    np.testing.assert_array_equal(x[3], m.fit[21:71])
    xt, st, _ = d.windows("test")
    assert xt.shape == (len(raw.test) - 49, 50, 38) and st[-1] == len(raw.test) - 50


@pytest.mark.slow
def test_registered_loader_several_machines(smd_dir):
    names = list_machines()[:2]
    raw = DATASETS.get("smd")(machines=names, length=20, stride=5)
    assert raw.task == "reconstruction" and raw.scale == 1.0
    ms = [load_machine(n) for n in names]
    n_fit = [len(m.train) - int(round(0.3 * len(m.train))) for m in ms]
    assert len(raw.x_train) == sum((n - 20) // 5 + 1 for n in n_fit)
    assert len(raw.x_val) == sum(len(m.train) - n - 19 for m, n in zip(ms, n_fit))
    assert raw.x_test.shape == (sum(len(m.test) - 19 for m in ms), 20, 38)
    # a test window is anomalous iff one of its 20 steps is labelled
    lab = ms[0].labels
    expect = [int(lab[i : i + 20].max()) for i in range(len(lab) - 19)]
    assert raw.y_test[: len(expect)].tolist() == expect
    assert raw.smd.describe()["machines"] == names


# ---- synthetic trees: bad input ------------------------------------------------------------------


def _tree(tmp_path, name="machine-9-9", train=None, test=None, labels=None):
    rng = np.random.default_rng(0)
    train = train if train is not None else [",".join(f"{v:.3f}" for v in r) for r in rng.random((60, 3))]
    test = test if test is not None else [",".join(f"{v:.3f}" for v in r) for r in rng.random((40, 3))]
    labels = labels if labels is not None else ["1" if 10 <= i < 15 else "0" for i in range(len(test))]
    for sub, lines in (("train", train), ("test", test), ("test_label", labels)):
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return train, test, labels


def test_synthetic_tree_loads(tmp_path):
    _tree(tmp_path)
    d = load_smd("machine-9-9", root=tmp_path, length=10, val_fraction=0.5)
    assert [len(d.machines[0].fit), len(d.machines[0].val), len(d.machines[0].test)] == [30, 30, 40]
    assert d.machines[0].labels.sum() == 5


def test_different_widths_names_file_and_line(tmp_path):
    train, _, _ = _tree(tmp_path)
    train[6] = "0.1,0.2"
    _tree(tmp_path, train=train)
    with pytest.raises(EdgekdError, match=r"train/machine-9-9.txt:7: row has 2 values, expected 3"):
        load_smd("machine-9-9", root=tmp_path)


def test_test_file_wider_than_train(tmp_path):
    _tree(tmp_path, test=["0.1,0.2,0.3,0.4"] * 40)
    with pytest.raises(
        EdgekdError, match=r"test/machine-9-9.txt:1: row has 4 values, expected 3 like .*train"
    ):
        load_smd("machine-9-9", root=tmp_path)


def test_machines_of_different_widths(tmp_path):
    _tree(tmp_path)
    _tree(tmp_path, name="machine-9-10", train=["1,2"] * 60, test=["1,2"] * 40)
    with pytest.raises(EdgekdError, match=r"machine-9-10.txt:1: row has 2 values, expected 3"):
        load_smd(["machine-9-9", "machine-9-10"], root=tmp_path, length=10)


@pytest.mark.parametrize("bad, what", [("nan", "NaN or infinite"), ("abc", "'abc' is not a number")])
def test_nan_or_text_names_line(tmp_path, bad, what):
    _, test, _ = _tree(tmp_path)
    test[12] = f"0.5,{bad},0.1"
    _tree(tmp_path, test=test)
    with pytest.raises(EdgekdError, match=rf"test/machine-9-9.txt:13: .*{what}"):
        load_smd("machine-9-9", root=tmp_path)


def test_window_longer_than_series(tmp_path):
    _tree(tmp_path)
    with pytest.raises(
        EdgekdError,
        match=r"train/machine-9-9.txt: the validation part has 18 time steps, shorter than the window length 25",
    ):
        load_smd("machine-9-9", root=tmp_path, length=25)


def test_label_length_mismatch(tmp_path):
    _tree(tmp_path, labels=["0"] * 39)
    with pytest.raises(EdgekdError, match=r"test_label/machine-9-9.txt: 39 labels but .*has 40 time steps"):
        load_smd("machine-9-9", root=tmp_path)


def test_label_not_binary(tmp_path):
    _tree(tmp_path, labels=["0"] * 20 + ["2"] + ["0"] * 19)
    with pytest.raises(EdgekdError, match=r"test_label/machine-9-9.txt:21: label 2 is not 0 or 1"):
        load_smd("machine-9-9", root=tmp_path)


def test_missing_machine_lists_found(tmp_path):
    _tree(tmp_path)
    _tree(tmp_path, name="machine-9-10")
    with pytest.raises(EdgekdError, match=r"'machine-1-1' not found in .*found: machine-9-9, machine-9-10"):
        load_smd(["machine-9-9", "machine-1-1"], root=tmp_path)


def test_missing_test_file(tmp_path):
    _tree(tmp_path)
    (tmp_path / "test" / "machine-9-9.txt").unlink()
    with pytest.raises(EdgekdError, match=r"test/machine-9-9.txt: missing"):
        load_smd("machine-9-9", root=tmp_path)


# ---- windows ---------------------------------------------------------------------------------------


def test_window_shapes_and_strides():
    series = np.arange(30, dtype=np.float32).reshape(10, 3)  # step t holds 3t, 3t+1, 3t+2
    w, s = sliding_windows(series, 4, 3)
    assert w.shape == (3, 4, 3) and s.tolist() == [0, 3, 6]
    np.testing.assert_array_equal(w[1, :, 0], [9, 12, 15, 18])
    w, s = sliding_windows(series, 4, 4, cover_end=True)
    assert s.tolist() == [0, 4, 6] and w[-1, -1, 0] == 27
    v, s = sliding_windows(series, 4, 2, copy=False)
    assert not v.flags.owndata and s.tolist() == [0, 2, 4, 6]
    np.testing.assert_array_equal(v, sliding_windows(series, 4, 2)[0])
    assert window_starts(10, 10).tolist() == [0]
    with pytest.raises(EdgekdError, match="longer than the series"):
        window_starts(10, 11)
    assert window_labels(np.array([0, 0, 0, 1, 0, 0, 0]), np.array([0, 2, 3, 4]), 3).tolist() == [0, 1, 1, 0]


def test_step_scores_mean_and_last():
    errors = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])  # windows at 0, 1, 2
    starts = np.array([0, 1, 2])
    # step 2 is position 2 of window 0, 1 of window 1, 0 of window 2: (3 + 5 + 7) / 3
    np.testing.assert_allclose(step_scores(errors, starts, 5), [1, 3, 5, 7, 9])
    # online: each step from the earliest window covering it (the one ending there, once t >= 2)
    np.testing.assert_allclose(step_scores(errors, starts, 5, reduce="last"), [1, 2, 3, 6, 9])
    gap = step_scores(errors[:2], np.array([0, 3]), 7)
    assert np.isnan(gap[6]) and gap[3] == 4


def test_smd_splits_keep_the_loader_split(tmp_path):
    _tree(tmp_path)
    s = smd_splits(machines=["machine-9-9"], root=str(tmp_path), length=10, val_fraction=0.5)
    assert s.input_shape == (10, 3) and (len(s.train), len(s.val), len(s.test)) == (21, 21, 31)
    assert s.describe()["task"] == "reconstruction" and s.describe()["sizes"]["val"] == 21
    # test windows 1..14 hold one of the labelled steps 10..14; window 0 (steps 0..9) does not
    assert s.test.y[:16].tolist() == [0] + [1] * 14 + [0]
    raw = np.array(
        [ln.split(",") for ln in (tmp_path / "train" / "machine-9-9.txt").read_text().split()], float
    )
    norm = s.info["smd_normalisation"]["machine-9-9"]
    np.testing.assert_allclose(s.val.x[0], (raw[30:40] - norm["offset"]) / norm["scale"], rtol=1e-5)


def test_feature_subset(tmp_path):
    _tree(tmp_path)
    full = load_smd("machine-9-9", root=tmp_path, length=10)
    sub = load_smd("machine-9-9", root=tmp_path, length=10, features=[2, 0])
    np.testing.assert_array_equal(sub.machines[0].test, full.machines[0].test[:, [2, 0]])
    assert sub.num_features == 2 and sub.describe()["features"] == [2, 0]
    with pytest.raises(EdgekdError, match=r"features: \[3\] out of range 0..2 for .*train/machine-9-9.txt"):
        load_smd("machine-9-9", root=tmp_path, features=[0, 3])
    with pytest.raises(EdgekdError, match="empty or repeated"):
        load_smd("machine-9-9", root=tmp_path, features=[1, 1])
