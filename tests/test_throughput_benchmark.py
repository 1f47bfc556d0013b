"""benchmarks/throughput_vs_torchdistill.py: the torchdistill side sees edgekd's pixels.

benchmarks/throughput_vs_torchdistill.py --augmented: the torchdistill side's loader (its sampler and
collate function) hands the student exactly the pixels edgekd's Trainer trains on, batch by batch.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

from edgekd.data import ArrayDataset


def _benchmark():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    return importlib.import_module("throughput_vs_torchdistill")


class _WithSupp(torch.utils.data.Dataset):
    """What torchdistill's ``requires_supp`` wrapper (BaseDatasetWrapper) yields: (sample, target, {})."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __getitem__(self, i):
        return (*self.ds[i], {})

    def __len__(self) -> int:
        return len(self.ds)


def test_torchdistill_side_sees_the_views_edgekd_trains_on(tmp_path):
    b = _benchmark()
    n, epochs = 300, 2  # 3 batches per epoch, the last one short
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    a = {"x_train": x, "y_train": y}

    trainer = b.edgekd_trainer(None, b.build(b.SETTINGS["student"]), a, epochs, tmp_path / "c",
                               **b.aug_trainer_kw(b.augmentation()))  # fmt: skip
    seen, batch = [], trainer._batch

    def record(*args):
        out = batch(*args)
        seen.append(out[:2])
        return out

    trainer._batch = record
    trainer.fit(ArrayDataset(x.numpy(), y.numpy()))

    order = b.AugmentedOrder(a, epochs)
    ds = _WithSupp(b.index_dataset(n))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=128, sampler=order.sampler(ds), collate_fn=order.collate
    )
    theirs = [(xb, yb) for _ in range(epochs) for xb, yb, _ in loader]

    assert len(seen) == len(theirs) == 6 and order.epoch == epochs - 1
    for (xe, ye), (xt, yt) in zip(seen, theirs):
        assert torch.equal(xe, xt) and torch.equal(ye, yt)
    # the views are real: most images moved or flipped, and an example shows other pixels in epoch 2
    first = order.perms[0][:128]
    assert (seen[0][0] != x[first]).flatten(1).any(1).float().mean() > 0.8
    assert torch.equal(seen[0][1], y[first])
    xb1, _ = b.augmented_batch(order.aug, x, y, first, 1)
    assert (xb1 != seen[0][0]).flatten(1).any(1).float().mean() > 0.5
