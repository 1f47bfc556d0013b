"""Autoencoders over time-series windows, for reconstruction-based anomaly detection.

Every model takes and returns ``(N, length, features)`` with ``input_shape = (length, features)``;
``num_classes`` is accepted (the registry passes it to every builder) and ignored.

* ``lstm-ae``: LSTM encoder -> last hidden state -> Linear to a latent vector -> the latent
  repeated over the window -> LSTM decoder -> Linear per step (Malhotra et al., 2016 style).
  Teacher and student differ only in ``hidden`` / ``latent`` / ``layers``
  (e.g. teacher ``hidden=64, latent=32``, student ``hidden=16, latent=8``). ``unrolled=True``
  writes the LSTMs out step by step (same weights and outputs) so that they export to TFLite.
* ``fc-ae``: flattened window -> Linear/ReLU encoder -> latent -> Linear/ReLU decoder (the MLPerf
  Tiny AD model shape). Ops: Reshape, FullyConnected, ReLU.
* ``conv1d-ae``: strided Conv1d/ReLU encoder over time (features as channels) -> Linear to a
  latent -> Linear back to ``channels x length`` -> Conv1d to the features. Ops: Transpose,
  Conv (1-D as 2-D), Reshape, FullyConnected, ReLU; no BatchNorm, no recurrent state: both MCU
  students run in int8 on TFLite Micro's standard kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.registry import register_model


def _window_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise EdgekdError(
            f"model {model!r}: input_shape={list(shape)}; expected [length, features] of a window"
        )
    return shape[0], shape[1]


def _stack_steps(steps: list[torch.Tensor], group: int = 8) -> torch.Tensor:
    """``torch.stack(steps, dim=1)`` as a tree of small concatenations: TFLite Micro's
    CONCATENATION takes at most 10 inputs."""
    if len(steps) <= group:
        return torch.stack(steps, dim=1)
    return torch.cat([_stack_steps(steps[i : i + group], group) for i in range(0, len(steps), group)], dim=1)


class UnrolledLSTM(nn.Module):
    """``nn.LSTM(batch_first=True)`` written out step by step with matrix products, sigmoid and tanh.

    Same parameter names and shapes as ``nn.LSTM`` (a state dict moves between the two), same
    numbers; it exports to plain FULLY_CONNECTED / LOGISTIC / TANH / MUL / ADD operators, which the
    ONNX -> TFLite route converts (onnx2tf cannot convert the ONNX LSTM operator) and TFLite Micro
    runs in int8. Returns ``(outputs, (h, c))`` like ``nn.LSTM``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, n_in)))
            self.register_parameter(
                f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
            )
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        hs, cs = [], []
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            bias = getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}")
            inputs = torch.nn.functional.linear(x, w_ih, bias)  # every step's input part at once
            h = x.new_zeros(x.shape[0], self.hidden_size)
            c = x.new_zeros(x.shape[0], self.hidden_size)
            outs = []
            for t in range(x.shape[1]):
                i, f, g, o = (inputs[:, t] + torch.nn.functional.linear(h, w_hh)).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            x = _stack_steps(outs)
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


class LSTMAutoencoder(nn.Module):
    """Sequence-to-sequence LSTM autoencoder with a vector bottleneck.

    ``unrolled=True`` builds the LSTMs as ``UnrolledLSTM`` (same weights, same outputs, exportable to
    TFLite / TFLite Micro); train either way and move the state dict across.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (32, 38),
        num_classes: int = 0,
        hidden: int = 64,
        latent: int = 32,
        layers: int = 1,
        unrolled: bool = False,
    ) -> None:
        super().__init__()
        self.length, self.features = _window_shape("lstm-ae", input_shape)
        if unrolled:
            self.encoder: nn.Module = UnrolledLSTM(self.features, hidden, layers)
            self.decoder: nn.Module = UnrolledLSTM(latent, hidden, layers)
        else:
            self.encoder = nn.LSTM(self.features, hidden, num_layers=layers, batch_first=True)
            self.decoder = nn.LSTM(latent, hidden, num_layers=layers, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.output = nn.Linear(hidden, self.features)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x)
        return self.to_latent(h[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        seq, _ = self.decoder(z.unsqueeze(1).expand(-1, self.length, -1))
        return self.output(seq)


class FCAutoencoder(nn.Module):
    """Fully-connected autoencoder over the flattened window."""

    def __init__(
        self,
        input_shape: Sequence[int] = (32, 38),
        num_classes: int = 0,
        hidden: Sequence[int] = (64,),
        latent: int = 16,
    ) -> None:
        super().__init__()
        self.length, self.features = _window_shape("fc-ae", input_shape)
        width = self.length * self.features
        enc: list[nn.Module] = []
        for h in [*hidden, latent]:
            enc += [nn.Linear(width, h), nn.ReLU()]
            width = h
        dec: list[nn.Module] = []
        for h in reversed(list(hidden)):
            dec += [nn.Linear(width, h), nn.ReLU()]
            width = h
        dec.append(nn.Linear(width, self.length * self.features))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x.reshape(x.shape[0], -1))
        return self.decoder(z).reshape(x.shape[0], self.length, self.features)


class Conv1dAutoencoder(nn.Module):
    """Conv1d encoder (stride 2 per layer), linear bottleneck, linear + Conv1d decoder."""

    def __init__(
        self,
        input_shape: Sequence[int] = (32, 38),
        num_classes: int = 0,
        channels: Sequence[int] = (32, 16),
        kernel: int = 5,
        latent: int = 16,
    ) -> None:
        super().__init__()
        self.length, self.features = _window_shape("conv1d-ae", input_shape)
        if kernel % 2 == 0:
            raise EdgekdError(f"model 'conv1d-ae': kernel={kernel} must be odd (same padding)")
        if not channels:
            raise EdgekdError("model 'conv1d-ae': channels must list at least one layer")
        enc: list[nn.Module] = []
        c_in, steps = self.features, self.length
        for c in channels:
            enc += [nn.Conv1d(c_in, c, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
            c_in, steps = c, math.ceil(steps / 2)
        self.encoder = nn.Sequential(*enc)
        self.to_latent = nn.Sequential(nn.Linear(c_in * steps, latent), nn.ReLU())
        self.dec_channels = channels[0]
        self.from_latent = nn.Sequential(nn.Linear(latent, self.dec_channels * self.length), nn.ReLU())
        self.output = nn.Conv1d(self.dec_channels, self.features, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = self.encoder(x.transpose(1, 2))
        z = self.to_latent(h.reshape(n, -1))
        d = self.from_latent(z).reshape(n, self.dec_channels, self.length)
        return self.output(d).transpose(1, 2)


register_model("lstm-ae")(LSTMAutoencoder)
register_model("fc-ae")(FCAutoencoder)
register_model("conv1d-ae")(Conv1dAutoencoder)
