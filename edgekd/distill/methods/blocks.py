"""Run a block-structured student (``features`` Sequential, then ``pool``/``flatten``/``dropout``/
``classifier``, like the ``cnn`` and ``cnn-teacher`` models) piece by piece: what multi-branch and
auxiliary-head methods (ONE, BYOT) need to branch off intermediate blocks without editing ``forward``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgekd.errors import EdgekdError

HEAD = ("pool", "flatten", "dropout", "classifier")


def check_blocks(net: nn.Module, method: str, min_blocks: int = 2) -> int:
    """The number of feature blocks; a one-line error when ``net`` is not block-structured."""
    feats = getattr(net, "features", None)
    if not isinstance(feats, nn.Sequential) or not all(
        isinstance(getattr(net, h, None), nn.Module) for h in HEAD
    ):
        raise EdgekdError(
            f"method {method}: needs a student made of `features` blocks and a `classifier` head (models cnn, "
            f"cnn-teacher); {type(net).__name__} is not"
        )
    if len(feats) < min_blocks:
        raise EdgekdError(
            f"method {method}: the student has {len(feats)} feature block(s), needs at least {min_blocks}; "
            "give model.kwargs.channels more entries"
        )
    return len(feats)


def run_blocks(net: nn.Module, h: Tensor, start: int, stop: int) -> Tensor:
    for block in list(net.features)[start:stop]:
        h = block(h)
    return h


def embed(net: nn.Module, h: Tensor) -> Tensor:
    """Pooled, flattened features (the classifier's input) from the last block's output."""
    return net.flatten(net.pool(h))


def classify(net: nn.Module, e: Tensor) -> Tensor:
    return net.classifier(net.dropout(e))


def block_channels(net: nn.Module, sample_x: Tensor) -> list[tuple[int, ...]]:
    """Output shape (without the batch) of every feature block, from one probe forward."""
    was = net.training
    net.eval()
    shapes, h = [], sample_x[:2]
    with torch.no_grad():
        for block in net.features:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    net.train(was)
    return shapes
