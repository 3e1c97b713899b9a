"""CUDA paths: skipped where there is no GPU (CI); run on a GPU host to check them."""
import pytest
import torch

from vssl_cli.data.augment import AugConfig, apply, sample_params
from vssl_cli.losses import nt_xent
from vssl_cli.models import ProjectionHead, build_backbone

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("name", ["r3d18", "r2plus1d18", "resnet18", "c3d"])
def test_backbone_trains_under_bf16_autocast_channels_last(name):
    torch.manual_seed(0)
    model = build_backbone(name).cuda().to(memory_format=torch.channels_last_3d)
    head = ProjectionHead(model.out_dim).cuda()
    x = torch.randn(4, 3, 16, 112, 112, device="cuda").to(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        z = head(model(x)["pooled"])
        loss = nt_xent(z[:2], z[2:])
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


@cuda
def test_augmentations_on_gpu_match_cpu():
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (6, 3, 8, 64, 80), dtype=torch.uint8, generator=g)
    cfg = AugConfig(size=56)
    params = sample_params(6, clips.shape[-2:], cfg, g)
    cpu = apply(clips, params, cfg)
    moved = type(params)(**{k: v.cuda() for k, v in params.__dict__.items()})
    gpu = apply(clips.cuda(), moved, cfg).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-3)
