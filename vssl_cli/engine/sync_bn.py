"""BatchNorm over the global batch for DDP on CPU (gloo).

PyTorch's SyncBatchNorm runs on GPUs only, so on CPU each process normalised with its
own few clips: a run over N processes then differed from one process training the same
global batch. Here every BatchNorm in training mode sums its per-channel count, sum and
sum of squares over all processes (float64, so the one-pass variance loses nothing that
matters in float32) and normalises with the global mean and variance; the backward pass
sums the gradients of those statistics over the processes in turn, as SyncBatchNorm does.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _SumOverProcesses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A drop-in for BatchNorm1d/2d/3d (same parameters and buffers)."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        wide = x.double()
        count = torch.full((1,), x.numel() / c, dtype=torch.float64, device=x.device)
        stats = _SumOverProcesses.apply(torch.cat([wide.sum(dims), (wide * wide).sum(dims),
                                                   count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.to(x.dtype))
            self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1)).to(x.dtype))
        shape = [1, c] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype).view(shape)) * scale.view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape)


def convert(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a GlobalBatchNorm holding its tensors."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine \
            and module.track_running_stats and module.momentum is not None:
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum)
        out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert(child))
    return module
