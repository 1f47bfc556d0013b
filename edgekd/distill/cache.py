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

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_torch_save
from edgekd.data import ArrayDataset
from edgekd.data.augment import Augmentation
from edgekd.distill.distributed import DistContext
from edgekd.distill.methods.base import Distiller
from edgekd.errors import EdgekdError

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
    outs = []
    for i in range(0, len(x), batch):
        with autocast() if autocast else contextlib.nullcontext():
            outs.append(fn(x[i : i + batch].to(device)).float().cpu())
    return torch.cat(outs)


class TeacherOutputs:
    """The teachers' stored outputs during one fit: built (or found) once per teacher, then sliced by the
    batch's indices; what was decided is recorded in ``speed`` (the run folder's ``speed.json``).

    Without augmentation: the outputs on every training example ``(N, ...)``. With augmentation and
    ``train.teacher_views = K``: the outputs on K views of every example ``(K, N, ...)`` in fp16; the
    student then draws one of those views each epoch. The teacher always scores the student's view.
    """

    def __init__(self, cache_dir: str | Path | None, preprocessing: dict[str, Any], augment: Augmentation | None,
                 teacher_views: int, num_classes: int, speed: dict[str, Any]) -> None:  # fmt: skip
        self.cache_dir = cache_dir  # None: no teacher-output cache
        self.preprocessing, self.augment = preprocessing, augment
        self.teacher_views, self.num_classes, self.speed = teacher_views, num_classes, speed
        self._stored: dict[int, Tensor] = {}  # id(teacher) -> its outputs on the training set

    def for_stage(self, distiller: Distiller, train: ArrayDataset, device: torch.device,
                  autocast: Callable[[], Any], ctx: DistContext) -> Tensor | None:  # fmt: skip
        """The teacher's stored outputs (on ``device``), or None when the teacher runs on every step."""
        teacher = getattr(distiller, "teacher", None)
        if teacher is None:
            return None
        t_in = getattr(distiller, "teacher_input", "x")
        views = self.teacher_views if t_in == "x" else 0
        if self.augment is not None:
            self.speed["teaching"] = ("consistent: the teacher scores the student's augmented view" if t_in == "x"
                                      else f"the teacher reads the unaugmented privileged input {t_in!r}")  # fmt: skip
            self.speed["augment"] = self.augment.describe()
            self.speed["teacher_views"] = views or "online (every view is new)"
        why_not = self._why_not(distiller, t_in, views)
        if why_not:
            self.speed["teacher_cache"] = f"off: {why_not}"
            log.info("teacher-output cache off: %s", why_not)
            return None
        if id(teacher) not in self._stored:
            self._stored[id(teacher)] = self._load_or_build(
                distiller, train, t_in, views, device, autocast, ctx
            )
        return self._stored[id(teacher)]

    def batch(self, outputs: Tensor, idx: Tensor, views: Tensor) -> Tensor:
        """The stored outputs of examples ``idx``, each on the view ``views`` it shows (float32)."""
        if outputs.dim() == 2 or self.augment is None:
            return outputs[idx].float()
        return outputs[views.to(outputs.device), idx].float()

    def _why_not(self, distiller: Distiller, t_in: str, views: int) -> str | None:
        if self.cache_dir is None:
            return "train.cache_teacher is off"
        if self.augment is not None and t_in == "x" and not views:
            return (
                "data.augment shows new views every epoch (train.teacher_views: 0): the teacher runs online"
            )
        if not distiller.cacheable_teacher():
            return (
                f"method {type(distiller).__name__} runs the teacher itself (teacher features, input "
                "gradients, or no cached-output support)"
            )
        return None

    def _load_or_build(self, distiller: Distiller, train: ArrayDataset, t_in: str, views: int,
                       device: torch.device, autocast: Callable[[], Any], ctx: DistContext) -> Tensor:  # fmt: skip
        assert self.cache_dir is not None
        t_x = train.x if t_in == "x" else train.extra[t_in]
        prep = {**self.preprocessing, "teacher_input": t_in, "device": device.type,
                "amp": self.speed.get("amp", "off")}  # fmt: skip
        if views:
            prep.update(
                {"augment": self.augment.describe(), "augment_seed": self.augment.seed, "views": views}
            )
        cache = TeacherCache(self.cache_dir, make_key(distiller.teacher, t_x, prep))
        t0 = time.perf_counter()
        compute = lambda: self._compute(distiller, t_x, train.y, views, device, autocast)  # noqa: E731
        out = cache.get(compute, write=ctx.is_main) if ctx.is_main else None
        ctx.barrier()  # rank 0 has written it: the others read it (or compute it without writing)
        if not ctx.is_main:
            out = cache.get(compute, write=False)
        if out.shape[int(bool(views))] != len(train) or (views and out.shape[0] != views):
            raise EdgekdError(f"{cache.path}: holds outputs of shape {tuple(out.shape)} for {len(train)} "
                              f"training samples and {views or 1} view(s); delete it")  # fmt: skip
        self.speed["teacher_cache"] = {**cache.record(), "seconds": round(time.perf_counter() - t0, 3)}
        return out.to(device)

    def _compute(self, distiller: Distiller, t_x: np.ndarray, y: np.ndarray, views: int,
                 device: torch.device, autocast: Callable[[], Any]) -> Tensor:  # fmt: skip
        """The teacher (in eval mode) on every example: ``(N, ...)``, or on K views of each ``(K, N, ...)``
        in fp16."""
        teacher = distiller.teacher
        was = teacher.training
        teacher.eval()
        x_all = torch.from_numpy(t_x)
        try:
            if not views:
                return compute_outputs(distiller.teacher_outputs, x_all, device, autocast=autocast)
            y_all, n, chunk = torch.from_numpy(y), len(x_all), 4096
            out = []
            for v in range(views):
                parts = []
                for i in range(0, n, chunk):
                    idx = np.arange(i, min(n, i + chunk))
                    xv, _ = self.augment.apply(x_all, y_all, idx, np.full(len(idx), v), self.num_classes)
                    parts.append(compute_outputs(distiller.teacher_outputs, xv, device, autocast=autocast))
                out.append(torch.cat(parts).half())
            return torch.stack(out)
        finally:
            teacher.train(was)
