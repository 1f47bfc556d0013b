"""Width-sliceable layers and a weight-sharing "supernet" for NetAug.

NetAug (Cai et al., "Network Augmentation for Tiny Deep Learning", ICLR 2022) trains a tiny model as the
leading channel slice of wider models: every conv / BN / linear of the base model is
``W_wide[:c_out, :c_in]`` of a wider layer. Here a registered model family is built once at its widest
augmented size, its ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` layers are turned into dynamic
layers that use only the leading channels, and the channel counts of any (augmented) configuration are
read off a shape template of the same family built on the ``meta`` device (no memory, no init cost).
The input channel count of every dynamic layer is taken from its input, so only conv output channels are
configured. :meth:`SuperNet.export` returns the base model as plain ``nn`` modules.

A family (e.g. :class:`~edgekd.models.cnn.TinyCNN`) is registered with :func:`register_family`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import EdgekdError
from edgekd.models.cnn import TinyCNN

# ---------------------------------------------------------------------------------------------
# dynamic layers


class DynamicConv2d(nn.Conv2d):
    """A conv whose active weight is ``weight[:active_out, :c_in]`` (``c_in`` from the input).

    Depthwise convs (``groups == in == out``) use ``weight[:c_in]`` with ``groups = c_in``."""

    active_out: int

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def forward(self, x: Tensor) -> Tensor:
        cin = x.shape[1]
        if self.is_depthwise:
            w = self.weight[:cin]
            b = self.bias[:cin] if self.bias is not None else None
            return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, cin)
        cout = self.active_out
        w = self.weight[:cout, :cin]
        b = self.bias[:cout] if self.bias is not None else None
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, 1)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BN over the leading ``c`` channels of its input. While ``update_stats`` is False (augmented
    forward passes) training uses batch statistics without touching the running ones."""

    update_stats: bool

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        track = self.training and self.update_stats and self.track_running_stats
        factor = 0.0
        if track:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if self.training:
            rm = self.running_mean[:c] if track else None
            rv = self.running_var[:c] if track else None
        else:
            rm, rv = self.running_mean[:c], self.running_var[:c]
        w = self.weight[:c] if self.affine else None
        b = self.bias[:c] if self.affine else None
        return F.batch_norm(x, rm, rv, w, b, self.training, factor, self.eps)


class DynamicLinear(nn.Linear):
    """A linear layer using ``weight[:, :c_in]`` (``c_in`` from the input)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight[:, : x.shape[-1]], self.bias)


def make_dynamic(model: nn.Module) -> nn.Module:
    """Turn every Conv2d / BatchNorm2d / Linear of ``model`` into its dynamic version in place (same
    parameters, same state_dict keys). Other grouped convs than depthwise are not supported."""
    for m in model.modules():
        if type(m) is nn.Conv2d:
            if m.groups > 1 and not (m.groups == m.in_channels == m.out_channels):
                raise EdgekdError(f"NetAug: grouped conv {m} is not supported (only dense or depthwise)")
            m.__class__ = DynamicConv2d
            m.active_out = m.out_channels
        elif type(m) is nn.BatchNorm2d:
            m.__class__ = DynamicBatchNorm2d
            m.update_stats = True
        elif type(m) is nn.Linear:
            m.__class__ = DynamicLinear
    return model


def conv_outs(model: nn.Module) -> list[int]:
    """Output channels of every conv of ``model`` in module order (the configuration of a supernet)."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


# ---------------------------------------------------------------------------------------------
# model families


@dataclass
class Family:
    """How to read, rebuild and widen one model class.

    ``spec(model)`` gives kwargs that rebuild the same architecture; ``build(kwargs)`` builds it;
    ``widen(kwargs, width_mults, expand_ratios)`` scales it (``width_mults`` one per width group,
    ``expand_ratios`` one per expandable block or empty); ``groups(kwargs)`` and ``blocks(kwargs)`` count
    width groups and expandable blocks; ``base_expand(kwargs)`` gives the base expand ratio per block."""

    spec: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[dict[str, Any]], nn.Module]
    widen: Callable[[dict[str, Any], Sequence[float], Sequence[float]], dict[str, Any]]
    groups: Callable[[dict[str, Any]], int]
    blocks: Callable[[dict[str, Any]], int] = lambda kw: 0
    base_expand: Callable[[dict[str, Any]], list[float]] = lambda kw: []


FAMILIES: dict[type, Family] = {}


def register_family(cls: type, family: Family) -> None:
    FAMILIES[cls] = family


def family_of(model: nn.Module) -> Family:
    fam = FAMILIES.get(type(model))
    if fam is None:
        known = ", ".join(c.__name__ for c in FAMILIES)
        raise EdgekdError(
            f"NetAug: model class {type(model).__name__} has no width-sliceable family; supported: {known}"
        )
    return fam


def widen_channels(c: int, mult: float) -> int:
    """Augmented channel count: ``round(c * mult)``, never below ``c``."""
    return max(int(c), int(round(c * mult)))


def _tinycnn_spec(m: nn.Module) -> dict[str, Any]:
    assert isinstance(m, TinyCNN)
    stem = m.features[0][0]
    channels = [stem.out_channels]
    depthwise = False
    for block in list(m.features)[1:]:
        if isinstance(block[0], nn.Sequential):  # depthwise-separable: (dw, pw)
            depthwise = True
            channels.append(block[1][0].out_channels)
        else:
            channels.append(block[0].out_channels)
    act = "relu6" if isinstance(m.features[0][2], nn.ReLU6) else "relu"
    dropout = m.dropout.p if isinstance(m.dropout, nn.Dropout) else 0.0
    return {
        "input_shape": [stem.in_channels, 1, 1],
        "num_classes": m.classifier.out_features,
        "channels": channels,
        "width": 1.0,
        "depthwise": depthwise,
        "activation": act,
        "dropout": dropout,
    }


def _tinycnn_widen(kw: dict[str, Any], mults: Sequence[float], expand: Sequence[float]) -> dict[str, Any]:
    out = dict(kw)
    out["channels"] = [widen_channels(c, w) for c, w in zip(kw["channels"], mults)]
    return out


register_family(
    TinyCNN,
    Family(
        spec=_tinycnn_spec,
        build=lambda kw: TinyCNN(**kw),
        widen=_tinycnn_widen,
        groups=lambda kw: len(kw["channels"]),
    ),
)


# ---------------------------------------------------------------------------------------------
# the supernet


class SuperNet(nn.Module):
    """The widest augmented model with the base model as its leading slices.

    ``forward`` runs the active configuration (the base model unless :meth:`set_config` /
    :meth:`sample` chose an augmented one). :meth:`export` returns the base model as plain modules.
    """

    def __init__(
        self,
        base: nn.Module,
        width_mults: Sequence[float] = (1.0, 1.8, 2.6),
        expand_ratios: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.family = family_of(base)
        self.width_mults = [float(w) for w in width_mults]
        if not self.width_mults or min(self.width_mults) < 1.0:
            raise EdgekdError(f"method.params.width_mults={list(width_mults)}: every multiplier must be >= 1")
        self.base_kwargs = self.family.spec(base)
        n_blocks = self.family.blocks(self.base_kwargs)
        base_e = self.family.base_expand(self.base_kwargs)
        self.expand_ratios = [float(e) for e in expand_ratios] if expand_ratios else []
        if self.expand_ratios and base_e and min(self.expand_ratios) < max(base_e):
            raise EdgekdError(
                f"method.params.expand_ratios={list(expand_ratios or [])}: must be >= the base expand ratio "
                f"({max(base_e)})"
            )
        self.n_groups = self.family.groups(self.base_kwargs)
        self.n_blocks = n_blocks
        max_cfg = self._cfg_kwargs([max(self.width_mults)] * self.n_groups, self._max_expand(base_e))
        net = self.family.build(max_cfg)
        # the base model's (seeded) initial weights become the leading slices
        base_state = base.state_dict()
        with torch.no_grad():
            for k, v in net.state_dict().items():
                src = base_state[k]
                v[tuple(slice(0, s) for s in src.shape)].copy_(src)
        self.net = make_dynamic(net)
        self._template = [copy.deepcopy(base)]  # a list: not a sub-module, not in state_dict
        self._base_outs = conv_outs(base)
        self._cache: dict[tuple, list[int]] = {}
        self.set_base()

    def _max_expand(self, base_e: list[float]) -> list[float]:
        if not self.n_blocks:
            return []
        return [max([e, *self.expand_ratios]) for e in base_e]

    def _cfg_kwargs(self, mults: Sequence[float], expand: Sequence[float]) -> dict[str, Any]:
        return self.family.widen(self.base_kwargs, list(mults), list(expand))

    # --- configurations ----------------------------------------------------------------------
    def _set_outs(self, outs: list[int]) -> None:
        convs = [m for m in self.net.modules() if isinstance(m, DynamicConv2d)]
        if len(convs) != len(outs):
            raise RuntimeError("NetAug: configuration does not match the supernet's layers")
        for m, c in zip(convs, outs):
            m.active_out = int(c)

    def set_base(self) -> None:
        """Run the base model (and let BN update its running statistics)."""
        self._set_outs(self._base_outs)
        self._bn_update(True)
        self.config: tuple = ("base",)

    def set_config(self, mults: Sequence[float], expand: Sequence[float] = ()) -> None:
        """Run an augmented model (BN uses batch statistics without updating running ones)."""
        key = (tuple(float(m) for m in mults), tuple(float(e) for e in expand))
        if key not in self._cache:
            with torch.device("meta"):
                t = self.family.build(self._cfg_kwargs(*key))
            self._cache[key] = conv_outs(t)
        self._set_outs(self._cache[key])
        self._bn_update(False)
        self.config = key

    def sample(self, rng: random.Random) -> tuple:
        """Choose a random augmented model: a width multiplier per width group and an expand ratio per
        block, resampled if it equals the base model."""
        base_e = self.family.base_expand(self.base_kwargs)
        choices_e = self.expand_ratios or []
        for _ in range(100):
            mults = [rng.choice(self.width_mults) for _ in range(self.n_groups)]
            expand = [rng.choice([e, *choices_e]) for e in base_e] if self.n_blocks else []
            if any(m > 1.0 for m in mults) or any(a != b for a, b in zip(expand, base_e)):
                break
        self.set_config(mults, expand)
        return self.config

    def _bn_update(self, flag: bool) -> None:
        for m in self.net.modules():
            if isinstance(m, DynamicBatchNorm2d):
                m.update_stats = flag

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    # --- base model ----------------------------------------------------------------------------
    def base_state_dict(self) -> dict[str, Tensor]:
        """The base model's weights: leading slices of the supernet's tensors (copies)."""
        tmpl = self._template[0].state_dict()
        wide = self.net.state_dict()
        return {k: wide[k][tuple(slice(0, s) for s in v.shape)].detach().clone() for k, v in tmpl.items()}

    def export(self) -> nn.Module:
        """The trained base model as plain ``nn`` modules (the same class and layout as the student
        given to the constructor), in eval mode."""
        plain = copy.deepcopy(self._template[0])
        plain.load_state_dict(self.base_state_dict())
        return plain.eval()

    @torch.no_grad()
    def recalibrate_bn(self, x: Tensor, batch_size: int = 256, max_samples: int = 2000) -> None:
        """Re-estimate the base model's BN running statistics on ``x`` (cumulative average)."""
        bns = [m for m in self.net.modules() if isinstance(m, DynamicBatchNorm2d)]
        if not bns or len(x) == 0:
            return
        was_training = self.training
        self.set_base()
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.train()
        gen = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(x), generator=gen)[:max_samples]
        for i in range(0, len(idx), batch_size):
            self.net(x[idx[i : i + batch_size]])
        for m, mom in zip(bns, saved):
            m.momentum = mom
        self.train(was_training)


__all__ = [
    "DynamicBatchNorm2d",
    "DynamicConv2d",
    "DynamicLinear",
    "FAMILIES",
    "Family",
    "SuperNet",
    "conv_outs",
    "family_of",
    "make_dynamic",
    "register_family",
    "widen_channels",
]
