"""Multi-process training on PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m edgekd distill RECIPE`` (or ``edgekd distill --nproc N RECIPE``) starts N
processes; each reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment and joins one process
group (NCCL on GPUs, gloo on the CPU). The rules the training loop (``edgekd.distill.train``) follows:

- every rank draws the same seeded permutation; the step's global batch (``train.batch_size``) is split
  across ranks the way ``DistributedSampler`` splits an epoch (rank r takes rows r, r+N, r+2N, ...), so the
  union of the local batches is the single-process batch and, with DDP averaging gradients and each local
  loss scaled by ``local_size * N / global_size``, one step equals a single-process step on the same
  global batch (up to float summation order; BatchNorm statistics are per rank, as with plain DDP);
- ``train.batch_size`` must be a multiple of N (a clear error otherwise);
- DDP wraps the trainable networks of the distiller only; the frozen teacher is excluded from DDP
  (its parameters and buffers are never synchronised) and runs without autograd;
- logged loss terms and accuracy are reduced across ranks; only rank 0 evaluates and writes the run
  folder (checkpoints included); every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def describe(self) -> str:
        """The backend as recorded in ``speed.json``."""
        if not self.enabled:
            return "single process"
        return f"torch.distributed ({torch.distributed.get_backend()}), DistributedDataParallel"


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as torchrun sets them (``(0, 1, 0)`` outside torchrun)."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))  # fmt: skip
    except ValueError as e:
        raise EdgekdError(f"RANK/WORLD_SIZE/LOCAL_RANK: not integers ({e}); launch with torchrun") from None


def init(device: str = "auto") -> DistContext:
    """Join the process group torchrun prepared (once per process); a single process gets a no-op context."""
    rank, world, local = env_world()
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local)


def current() -> DistContext:
    """The context of this process (after :func:`init`; single-process when no group is initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), env_world()[2])
    return DistContext()


def check_batch(batch_size: int, world: int, where: str = "train.batch_size") -> None:
    if world > 1 and batch_size % world:
        raise EdgekdError(
            f"{where}={batch_size} is not a multiple of the world size {world} (torchrun --nproc_per_node x "
            f"--nnodes): use a batch size divisible by {world}, e.g. {max(world, batch_size // world * world)}"
        )


def local_rows(n: int, ctx: DistContext) -> slice:
    """The rows of a global batch of ``n`` that this rank trains on (the DistributedSampler split)."""
    return slice(ctx.rank, n, ctx.world_size) if ctx.enabled else slice(None)


def reduce_step(loss: Tensor, terms: dict[str, Tensor], logits: Tensor, labels: Tensor, n_local: int,
                n_global: int, ctx: DistContext, task: str) -> tuple[Tensor, dict[str, Tensor], int]:  # fmt: skip
    """The global batch's mean loss and terms and its correct count, from every rank's local ones."""
    correct = (logits.argmax(1) == labels).sum().float() if task == "classification" else loss.new_zeros(())
    vec = torch.stack([loss.detach().float() * n_local, *(v.detach().float() * n_local for v in terms.values()),
                       correct.detach()]).cpu()  # fmt: skip
    if torch.distributed.get_backend() == "nccl":
        vec = ctx.all_reduce_sum(vec.to(loss.device)).cpu()
    else:
        vec = ctx.all_reduce_sum(vec)
    mean = vec[:-1] / n_global
    return mean[0], dict(zip(terms, mean[1:])), int(vec[-1])


class TrainStep(nn.Module):
    """Routes DDP's ``forward`` to ``distiller.forward_train`` (DDP synchronises what ``forward`` used)."""

    def __init__(self, distiller: nn.Module) -> None:
        super().__init__()
        self.distiller = distiller

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.distiller.forward_train(*args, **kwargs)


def wrap(distiller: nn.Module, device: torch.device, ctx: DistContext) -> Any:
    """``forward_train`` of ``distiller``, through DDP when distributed (the teacher left out of DDP)."""
    if not ctx.enabled:
        return distiller.forward_train
    from torch.nn.parallel import DistributedDataParallel as DDP

    step = TrainStep(distiller)
    teacher = getattr(distiller, "teacher", None)
    if teacher is not None:
        ignore = [f"distiller.teacher.{n}" for n, _ in teacher.named_parameters()]
        ignore += [f"distiller.teacher.{n}" for n, _ in teacher.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(step, ignore)
    ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    return DDP(step, device_ids=ids)


def launch(nproc: int, argv: list[str]) -> int:
    """``edgekd distill --nproc N ...``: re-run the same command under ``torch.distributed.run`` on this
    machine (``--standalone``). Returns the exit status."""
    import subprocess
    import sys

    if nproc < 1:
        raise EdgekdError(f"--nproc {nproc}: needs at least 1 process")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "edgekd", *argv]  # fmt: skip
    return subprocess.call(cmd)
