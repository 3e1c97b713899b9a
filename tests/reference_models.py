"""The field's own model code, for checking imports against it (test-only).

torchvision and PyTorchVideo build the published networks; the tests build them with
random weights here, save them as their authors do, import them with ``vssl import`` and
compare features. PyPI's torchvision wheel is linked against a CUDA build of PyTorch: on
a CPU build its compiled operators (detection ops such as ``nms``) do not load, and its
import stops while registering their shapes. The video ResNets are plain PyTorch, so the
registrations are skipped while importing; nothing here calls those operators.
"""
from __future__ import annotations

import functools
from unittest import mock

import pytest
import torch


@functools.cache
def _import_torchvision():
    try:
        import torchvision
        return torchvision
    except RuntimeError:
        with mock.patch.object(torch.library, "register_fake", lambda *a, **k: (lambda f: f)):
            import torchvision
        return torchvision
    except ImportError:
        return None


def torchvision_video():
    """``torchvision.models.video``, or skip the test when torchvision is not installed
    (``make install`` installs it)."""
    tv = _import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not installed")
    from torchvision.models import video
    return video


def pytorchvideo_hub_resnet():
    if _import_torchvision() is None:
        pytest.skip("torchvision is not installed")
    try:
        from pytorchvideo.models.hub import resnet
    except ImportError:
        pytest.skip("pytorchvideo is not installed")
    return resnet


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so that a missed or swapped
    BatchNorm key changes the features."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
            m.num_batches_tracked.fill_(1000)
    return model.eval()
