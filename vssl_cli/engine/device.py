"""Where training runs: device choice, mixed precision and torchrun's process group.

The same command works alone or under ``torchrun``: the launcher's environment
(RANK, WORLD_SIZE, LOCAL_RANK) is read here, NCCL is used on CUDA and gloo on CPU.
"""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from vssl_cli.errors import UsageProblem


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when present (this process's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageProblem(f"--device {name}: CUDA is not available on this machine")
        device = torch.device(name if ":" in name else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise UsageProblem("--device mps: Apple's Metal (MPS) is not available on this "
                           "machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageProblem(f"unknown device {name!r}") from None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        return os.cpu_count() or 1


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader reader processes; ``requested`` -1 is auto. A reader spends ~2.5 ms of
    CPU per item (bench/train.py). On CUDA the GPU consumes items far faster than one
    reader supplies them: use the cores this process has (its share under torchrun),
    less one for the training loop, up to 8. On a CPU the model itself already uses every
    core and needs ~20 ms per item, so reading in the training process costs only the reads,
    while a reader process also stalls the model's threads it preempts (2 cores: 83 clips/s
    reading in-process, 77 with 1 reader, 71 with 2); one reader per 8 cores is a guess for
    bigger CPUs, where reads in the loop would start to show (not measured)."""
    if requested >= 0:
        return requested
    cores = max(1, _cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return cores // 8


def init_distributed(d: Dist, device: torch.device) -> None:
    if d.world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _attempt_store(d)
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=d.rank, world_size=d.world)


def _attempt_store(d: Dist):
    """torchrun's agent store, under a prefix of its own for every restart attempt.

    After a worker dies, torchrun --max-restarts starts the group again against the same
    agent store, where the dead group's addresses are still written: a new process could
    read its peer's old address before the peer writes its new one and wait forever on a
    closed port (seen here in about half of the restarts). None when not under torchrun's
    agent store (plain env:// init)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or \
            "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    from datetime import timedelta
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          d.world, is_master=False, timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"/vssl/attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}",
                            store)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _GatherRows(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient of the gathered rows and
    hands each process the part for its own rows (the loss is computed on every process
    from the same gathered batch, as SimCLR's and MoCo's distributed code do)."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows; gradients flow back to each process's own rows."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    return _GatherRows.apply(x)


def all_gather_detached(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows, concatenated, without gradient (e.g. memory-bank updates)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x.detach()
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.detach().contiguous())
    return torch.cat(out)


def mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with loss scaling); none on CPU."""
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16
