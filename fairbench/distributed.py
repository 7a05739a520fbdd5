"""One run on several processes (``torchrun``): data parallel, one process per GPU (or CPU).

With ``WORLD_SIZE > 1`` every rank draws the batches one process would draw and trains a disjoint
shard of each; gradients are averaged over the ranks before every optimizer step (a step pre-hook,
not the DDP wrapper: methods run their own step sequences), BatchNorm statistics are averaged or
synchronised, evaluation is shared out and gathered in dataset order, and rank 0 alone writes the
run folder. Methods that couple a batch's samples reduce with :func:`global_sum`.
Details: docs/clusters.md#one-run-on-several-gpus-torchrun
"""

from __future__ import annotations

import contextlib
import os
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Processes:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(environ: dict[str, str] | None = None) -> Processes:
    """The process layout torchrun (or any launcher setting its variables) gives this process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE / RANK / LOCAL_RANK must be integers: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Processes(rank, world, local)


def current() -> Processes:
    """This process's layout once the process group is up (one process otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Processes()


def is_main_process() -> bool:
    """True in a one-process run and on rank 0 of a torchrun job (before or after the group starts)."""
    return from_environment().is_main


def device_for(requested: str, procs: Processes) -> torch.device:
    """Each process's device: ``cuda:LOCAL_RANK`` when running on GPUs, else the CPU."""
    if not procs.active:
        raise AssertionError("device_for is for runs of several processes")
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device={requested!r}: with torchrun every process uses cuda:LOCAL_RANK; "
                         "set train.device to auto, cuda or cpu (and CUDA_VISIBLE_DEVICES to choose GPUs)")
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available; use --set train.device=cpu")
    if procs.local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={procs.local_rank} but this node has {torch.cuda.device_count()} visible GPUs; "
                         "start at most that many processes per node (--nproc-per-node)")
    device = torch.device("cuda", procs.local_rank)
    torch.cuda.set_device(device)
    return device


def start(procs: Processes, device: torch.device) -> bool:
    """Join the process group (NCCL on GPUs, gloo on CPUs); True if this call started it."""
    if not procs.active or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=procs.rank,
                            world_size=procs.world_size, device_id=device if device.type == "cuda" else None)
    return True


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(procs: Processes, requested_device: str) -> Iterator[torch.device | None]:
    """The process group of a torchrun job for the duration of a run (nothing for one process);
    yields this process's device."""
    if not procs.active:
        yield None
        return
    device = device_for(requested_device, procs)
    started = start(procs, device)
    try:
        yield device
    finally:
        if started:
            stop()


def on_main(fn: Callable[[], Any], procs: Processes) -> Any:
    """``fn()`` run on rank 0 alone (what reads the run folder); its result, or its exception,
    on every rank, so that no rank waits for one that gave up."""
    if not procs.active:
        return fn()
    if procs.is_main:
        try:
            value = fn()
        except Exception as exc:
            broadcast_object(("error", exc))
            raise
        broadcast_object(("ok", value))
        return value
    kind, value = broadcast_object(None)
    if kind == "error":
        raise value
    return value


class DiscardWrites:
    """The run writer of ranks other than 0: rank 0 alone writes the run folder."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def shard_size(global_batch: int, world_size: int) -> int:
    """Each rank's share of a global batch; the global batch must split evenly."""
    if global_batch % world_size:
        raise ValueError(f"train.batch_size={global_batch} (the global batch) does not split evenly over "
                         f"{world_size} processes; use a multiple of {world_size}")
    return global_batch // world_size


def shard_rows(global_batch: int, procs: Processes) -> slice:
    """This rank's contiguous rows of a global batch."""
    size = shard_size(global_batch, procs.world_size)
    return slice(procs.rank * size, (procs.rank + 1) * size)


def check_method(method_cls: type, name: str) -> None:
    """Refuse a method that cannot run split over processes, saying why."""
    support = getattr(method_cls, "data_parallel", False)
    if support is True:
        return
    reason = support if isinstance(support, str) and support else (
        "it does not declare whether its update can be split over processes (Method.data_parallel)")
    raise ValueError(f"method {name!r} cannot run on several processes: {reason}. Run it as one process "
                     "(without torchrun)")


# -- collectives (each a no-op in a one-process run) ---------------------------------------------

def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks, differentiable: each rank's gradient reaches its own contribution.

    For a batch statistic that the loss reads (per-group loss sums and counts): with the
    gradients then averaged over the ranks, the update equals one process's on the global batch.
    """
    if not is_distributed():
        return tensor
    return _AllReduceSum.apply(tensor)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; backward sums the ranks' gradients (each rank's loss reads the
    total). torch.distributed.nn.functional.all_reduce, which is deprecated without an autograd
    replacement."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def _flat_collective_(tensors: Sequence[torch.Tensor], collective: Callable[[torch.Tensor], None]) -> None:
    """``collective`` on the tensors in place, through one flat buffer per dtype and device (one
    call instead of one per tensor; any memory layout)."""
    by_dtype: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def _flat_all_reduce_(tensors: Sequence[torch.Tensor], divide: int | None = None) -> None:
    """All-reduce (sum, or mean with ``divide``) tensors in place."""

    def reduce(flat: torch.Tensor) -> None:
        dist.all_reduce(flat)
        if divide:
            flat.div_(divide)

    _flat_collective_(tensors, reduce)


def average_gradients_(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """Mean over the ranks of per-rank gradients (``None`` where a rank's loss did not reach a
    parameter counts as zero there; ``None`` stays where no rank has a gradient)."""
    world = dist.get_world_size()
    device = like[0].device if like else torch.device("cpu")
    present = torch.tensor([g is not None for g in grads], dtype=torch.float32, device=device)
    dist.all_reduce(present)
    out: list[torch.Tensor | None] = []
    for g, p, count in zip(grads, like, present.tolist()):
        out.append(None if count == 0 else (torch.zeros_like(p) if g is None else g))
    _flat_all_reduce_([g for g in out if g is not None], divide=world)
    return out


class GradientAverager:
    """Averages gradients over the ranks before every ``step()`` of the method's optimizers.

    ``attach`` is called after every ``Method.begin_epoch``: optimizers built there (JTT's second
    phase) get the hook too."""

    def __init__(self):
        self._hooked: weakref.WeakSet = weakref.WeakSet()  # not ids: a freed optimizer's id can be reused

    def attach(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        for opt in optimizers:
            if opt not in self._hooked:
                self._hooked.add(opt)
                opt.register_step_pre_hook(_average_before_step)


_ALREADY_AVERAGED = "_fairbench_grads_averaged"


def mark_averaged(optimizer: torch.optim.Optimizer) -> None:
    """The method set gradients that are already the ranks' mean (the adversary's projection)."""
    setattr(optimizer, _ALREADY_AVERAGED, True)


def _average_before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if getattr(optimizer, _ALREADY_AVERAGED, False):
        setattr(optimizer, _ALREADY_AVERAGED, False)
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p, g in zip(params, average_gradients_([p.grad for p in params], params)):
        p.grad = g


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_state(module: nn.Module) -> None:
    """Every parameter and buffer from rank 0 (as DDP does when it wraps a model)."""
    _flat_collective_([t for t in module.state_dict().values() if torch.is_tensor(t)], lambda flat: dist.broadcast(flat, 0))


def average_batchnorm_statistics(module: nn.Module) -> None:
    """Mean of the ranks' BatchNorm running statistics (each rank saw only its shards)."""
    stats = [t for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             for t in (m.running_mean, m.running_var) if t is not None]
    if stats:
        _flat_all_reduce_(stats, divide=dist.get_world_size())


def average_logs(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-rank sums of the logged losses, averaged over the ranks (the same keys on every rank)."""
    if not sums:
        return sums
    keys = sorted(sums)
    stacked = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64).reshape(()).cpu() for k in keys])
    if dist.get_backend() == "nccl":
        stacked = stacked.cuda()
    dist.all_reduce(stacked)
    stacked = (stacked / dist.get_world_size()).cpu()
    return {k: stacked[i] for i, k in enumerate(keys)}


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_batches(mine: dict[int, np.ndarray], n_batches: int) -> list[np.ndarray]:
    """Every rank's {batch number: rows}, reassembled in batch order (each batch exactly once)."""
    parts: list[dict[int, np.ndarray] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    merged: dict[int, np.ndarray] = {}
    for part in parts:
        for k, v in (part or {}).items():
            if k in merged:
                raise RuntimeError(f"evaluation batch {k} was predicted by two processes")
            merged[k] = v
    if sorted(merged) != list(range(n_batches)):
        raise RuntimeError(f"evaluation batches missing after the gather: {sorted(set(range(n_batches)) - set(merged))}")
    return [merged[k] for k in range(n_batches)]


# -- synchronised BatchNorm ------------------------------------------------------------------------

class SyncBatchNorm(nn.SyncBatchNorm):
    """``torch.nn.SyncBatchNorm``, also on CPUs (gloo), where torch's raises.

    On the CPU the global batch's mean and biased variance come from two differentiable
    all-reduces of per-rank sums (two passes: no E[x^2] - E[x]^2 cancellation)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or not self.training or not is_distributed():
            return super().forward(input)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()
        count = all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64))[0]
        mean = all_reduce(x.sum(dims).double()) / count
        centred = x - mean.to(x.dtype).view(shape)
        var = all_reduce(centred.pow(2).sum(dims).double()) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
                unbiased = var * (count / (count - 1)) if count > 1 else var
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        out = centred * torch.rsqrt(var.to(x.dtype) + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Every plain BatchNorm layer replaced by :class:`SyncBatchNorm` (same parameter objects, so
    optimizers stay valid); layers already synchronised are kept. Call again after a method
    builds new layers (JTT's second phase)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(child)
            converted.__class__ = SyncBatchNorm
            setattr(module, name, converted)
        else:
            convert_batchnorm(child)
    return module

