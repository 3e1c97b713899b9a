"""The two pieces that make N DDP processes compute what one process of the same global
batch computes: BatchNorm over the global batch on CPU, and augmentations drawn for the
global batch (tests/test_cluster.py checks the whole run)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from vssl_cli.data.augment import AugConfig, augment, global_batch
from vssl_cli.engine.sync_bn import GlobalBatchNorm, convert


@pytest.fixture()
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_global_batchnorm_equals_batchnorm_in_one_process(one_process_group):
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4)).train()
    reference[1].weight.data.uniform_(0.5, 1.5)
    ours = convert(copy.deepcopy(reference))
    assert isinstance(ours[1], GlobalBatchNorm) and not isinstance(reference[1], GlobalBatchNorm)
    x = torch.randn(3, 3, 4, 9, 9) * 3 + 2
    w = torch.randn(3, 4, 2, 7, 7)
    (reference(x) * w).sum().backward()
    (ours(x) * w).sum().backward()
    for a, b in zip(reference.parameters(), ours.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    assert torch.allclose(reference[1].running_var, ours[1].running_var, rtol=1e-6)
    assert torch.allclose(reference[1].running_mean, ours[1].running_mean, atol=1e-6)
    ours.eval(), reference.eval()
    assert torch.allclose(reference(x), ours(x), atol=1e-5)


def test_each_process_gets_its_rows_of_the_global_draws():
    clips = torch.randint(0, 255, (4, 3, 2, 24, 32), dtype=torch.uint8)
    hw = torch.tensor([[24, 32], [20, 32], [24, 30], [16, 32]])
    cfg = AugConfig(size=16)
    whole, params = augment(clips, cfg, torch.Generator().manual_seed(7), hw)
    for rank in (0, 1):
        rows = slice(2 * rank, 2 * rank + 2)
        with global_batch(torch.Generator().manual_seed(7), rank, 2):
            part, mine = augment(clips[rows], cfg, torch.Generator().manual_seed(99), hw[rows])
        assert torch.equal(mine.boxes, params.boxes[rows])
        assert torch.allclose(part, whole[rows], atol=1e-6)
