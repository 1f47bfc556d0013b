"""Teacher-output cache: the frozen teacher's outputs on the training set, computed once and reused.

When the teacher sees the same inputs every epoch (no random augmentation, no teacher features or input
gradients needed; see :meth:`edgekd.distill.methods.base.Distiller.cacheable_teacher`), its outputs for
sample ``i`` never change, so they are computed once, stored, and sliced by the batch's indices instead of
running the teacher on every step of every epoch. The store is content-addressed: the file name is a hash
of three components, each recorded inside the file and checked on load:

- ``teacher``: every tensor of the teacher's ``state_dict`` (names, dtypes, shapes, bytes) and its class,
- ``data``: the training inputs the teacher reads (``x``, or the privileged input), bytes and shape,
- ``preprocessing``: how the inputs reach the teacher (teacher input name, AMP dtype, device type, the
  data set's options and, for augmented views, the transforms, their seed and the number of views) --
  anything that changes the numbers without changing the stored arrays.

With ``data.augment`` and ``train.teacher_views: K`` the file holds the outputs on K augmented views of
every example, ``(K, N, ...)`` in fp16; each view is regenerated from its seed when the student draws it.

A file whose recorded key differs (copied, renamed, a truncated-hash collision) is rebuilt and the message
names the component that differs; an unreadable or corrupt file (bad checksum) is rebuilt with a warning.
Files are written atomically and read with ``torch.load(weights_only=True, mmap=True)``: the outputs are a
memory-mapped tensor, never unpickled objects.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_torch_save

log = logging.getLogger(__name__)

CACHE_FORMAT = "edgekd-teacher-cache/1"
COMPONENTS = ("teacher", "data", "preprocessing")


def hash_module(module: nn.Module) -> str:
    """SHA-256 over the class name and every state-dict entry (name, dtype, shape, bytes)."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        if not isinstance(t, Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hash_array(a: np.ndarray) -> str:
    h = hashlib.sha256(f"{a.dtype}:{a.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def hash_obj(obj: Any) -> str:
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def tensor_checksum(t: Tensor) -> str:
    return hashlib.sha256(memoryview(t.contiguous().numpy()).cast("B")).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    teacher: str
    data: str
    preprocessing: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.teacher}/{self.data}/{self.preprocessing}".encode()).hexdigest()

    def as_dict(self) -> dict[str, str]:
        return {c: getattr(self, c) for c in COMPONENTS}


def make_key(teacher: nn.Module, teacher_x: np.ndarray, preprocessing: dict[str, Any]) -> CacheKey:
    return CacheKey(hash_module(teacher), hash_array(teacher_x), hash_obj(preprocessing))


class TeacherCache:
    """The outputs of ``teacher`` on every training sample, stored under ``directory``.

    ``events`` records what happened (``hit``, ``built``, ``rebuilt: <why>``) for the run folder.
    """

    def __init__(self, directory: str | Path, key: CacheKey) -> None:
        self.directory = Path(directory)
        self.key = key
        self.path = self.directory / f"teacher-{key.digest[:32]}.pt"
        self.events: list[str] = []

    def load(self) -> Tensor | None:
        """The cached outputs, or None (absent, for another key, or corrupt: the reason is logged)."""
        if not self.path.exists():
            return None
        try:
            obj = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
                raise ValueError("not an edgekd teacher-output cache")
            out = obj["outputs"]
            if not isinstance(out, Tensor):
                raise ValueError("no outputs tensor")
            key = obj["key"]
        except Exception as e:  # truncated / garbage bytes: torch raises many types
            self._say(f"rebuilt: corrupt ({type(e).__name__})", f"{self.path}: unreadable teacher-output "
                      f"cache ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); rebuilding it")  # fmt: skip
            return None
        differ = [c for c in COMPONENTS if key.get(c) != getattr(self.key, c)]
        if differ:
            what = ", ".join(
                {"teacher": "teacher weights", "data": "training data"}.get(c, c) for c in differ
            )
            self._say(f"rebuilt: other {what}", f"{self.path}: teacher-output cache was made for other {what}; "
                      "not reused, rebuilding it")  # fmt: skip
            return None
        if obj.get("checksum") != tensor_checksum(out):
            self._say("rebuilt: corrupt (checksum)",
                      f"{self.path}: teacher-output cache fails its checksum (corrupt); rebuilding it")  # fmt: skip
            return None
        self.events.append("hit")
        return out

    def build(self, compute: Callable[[], Tensor], write: bool = True) -> Tensor:
        """Compute the outputs (N, ...) and store them atomically (``write``: only rank 0 writes)."""
        out = compute().detach().cpu()
        out = (out if out.dtype == torch.float16 else out.float()).contiguous()  # fp16: K augmented views
        if write:
            atomic_torch_save(
                self.path,
                {"format": CACHE_FORMAT, "key": self.key.as_dict(), "outputs": out, "checksum": tensor_checksum(out)},
            )  # fmt: skip
        self.events.append("built")
        return out

    def get(self, compute: Callable[[], Tensor], write: bool = True) -> Tensor:
        out = self.load()
        return out if out is not None else self.build(compute, write)

    def _say(self, event: str, message: str) -> None:
        self.events.append(event)
        log.warning(message)

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "key": self.key.as_dict(), "events": list(self.events)}


@torch.no_grad()  # not inference_mode: a teacher may optimise inside forward (specialist ensembles)
def compute_outputs(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device, batch: int = 1024,
                    autocast: Callable[[], Any] | None = None) -> Tensor:  # fmt: skip
    """``fn`` over ``x`` in batches of ``batch`` (no autograd graph), concatenated on the CPU."""
    import contextlib

    outs = []
    for i in range(0, len(x), batch):
        with autocast() if autocast else contextlib.nullcontext():
            outs.append(fn(x[i : i + batch].to(device)).float().cpu())
    return torch.cat(outs)
