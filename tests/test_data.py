"""edgekd.data: the IDX reader, the data registry, splits and jitter."""

import gzip
import struct

import numpy as np
import pytest

from edgekd.data import load_data
from edgekd.data.idx import read_idx
from edgekd.errors import EdgekdError


def _write_idx(path, arr, gz):
    head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_raw_and_gzip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("a.gz" if gz else "a")
    _write_idx(p, arr, gz)
    out = read_idx(p)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    assert np.array_equal(out, arr)


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(EdgekdError, match="bad magic"):
        read_idx(p)
    arr = np.zeros((4, 2, 2), np.uint8)
    _write_idx(tmp_path / "t", arr, False)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-3])
    with pytest.raises(EdgekdError, match="holds 13 bytes"):
        read_idx(tmp_path / "t")


@pytest.mark.slow
def test_real_mnist_files(mnist_available):
    d = load_data("mnist", val_fraction=0.0)
    assert len(d.train) == 60000 and len(d.test) == 10000 and d.input_shape == (1, 28, 28)
    # the official label counts of the MNIST test set
    assert np.bincount(d.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(float(d.train.x.mean())) < 1e-3 and abs(float(d.train.x.std()) - 1) < 1e-3


def test_missing_data_set_names_dir_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_DATA_DIR", str(tmp_path))
    with pytest.raises(EdgekdError, match=r"EDGEKD_DATA_DIR=.*train-images-idx3-ubyte"):
        load_data("fashion-mnist")


def test_digits_splits_are_seeded_stratified_and_disjoint():
    a = load_data("digits", seed=1)
    b = load_data("digits", seed=1)
    c = load_data("digits", seed=2)
    assert np.array_equal(a.train.y, b.train.y) and np.array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.y, c.train.y)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    # stratified: every class in every split
    for part in (a.train, a.val, a.test):
        assert len(np.unique(part.y)) == 10
    # normalisation statistics come from the training split only
    assert abs(float(a.train.x.mean())) < 1e-5
    assert a.describe()["normalisation"]["scale"] == 16.0


def test_exclude_classes_and_train_fraction():
    d = load_data("digits", exclude_classes=[3], train_fraction=0.5)
    assert 3 not in d.train.y and 3 in d.test.y and 3 in d.val.y
    full = load_data("digits")
    assert abs(len(d.train) - (len(full.train) - (full.train.y == 3).sum()) * 0.5) < 12


def test_npz_loader(tmp_path):
    x = np.random.default_rng(0).random((50, 1, 4, 4)).astype(np.float32)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_data("npz", options={"path": str(tmp_path / "d.npz")})
    assert d.num_classes == 5 and d.input_shape == (1, 4, 4)
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(EdgekdError, match="missing array 'y'"):
        load_data("npz", options={"path": str(tmp_path / "bad.npz")})
