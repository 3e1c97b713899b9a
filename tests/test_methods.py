"""Pretraining methods: samplers, losses against direct recomputation, gradient flow."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vssl_cli.data.augment import AugConfig
from vssl_cli.methods.simclr import SimCLR, SimCLRParams
from vssl_cli.methods.tclr import TCLR, TCLRParams, global_local_loss, local_local_loss, tclr_views


def test_tclr_global_clip_spans_exactly_the_local_segments():
    rng = np.random.default_rng(0)
    for n in (40, 64, 100):
        glob, *local = tclr_views(n, 8, 2, 4, rng)
        assert len(local) == 4 and all(len(v) == 8 for v in [glob, *local])
        assert all(0 <= v.min() and v.max() < n for v in [glob, *local])
        if n >= 64:                                      # room: no looping
            starts = [v[0] for v in local]
            assert all(b - a == 16 for a, b in zip(starts, starts[1:]))  # consecutive segments
            assert glob[0] == local[0][0] and glob[-1] <= local[-1][-1]
            assert all(glob[2 * k] == local[k][0] for k in range(4))     # part k starts clip k


def _nce(a, cands, pos, tau):
    sims = [float(F.cosine_similarity(a, c, dim=0)) / tau for c in cands]
    return -sims[pos] + math.log(sum(math.exp(s) for s in sims))


def test_local_local_loss_matches_a_loop():
    torch.manual_seed(0)
    z1, z2 = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    want = 0.0
    for b in range(3):
        views = list(z1[b]) + list(z2[b])
        total = 0.0
        for i in range(8):
            others = [views[j] for j in range(8) if j != i]
            partner = (i + 4) % 8
            total += _nce(views[i], others, partner if partner < i else partner - 1, 0.1)
        want += total / 8
    assert abs(float(local_local_loss(z1, z2, 0.1)) - want / 3) < 1e-4


def test_global_local_loss_matches_a_loop_and_knows_aligned_parts():
    torch.manual_seed(1)
    parts, local = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    want = 0.0
    for b in range(2):
        for k in range(4):
            want += _nce(parts[b, k], list(local[b]), k, 0.1) / 4
            want += _nce(local[b, k], list(parts[b]), k, 0.1) / 4
    assert abs(float(global_local_loss(parts, local, 0.1)) - want / 2) < 1e-4
    eye = torch.eye(4).repeat(2, 1, 1)
    assert float(global_local_loss(eye, eye, 0.1)) < 1e-3            # identical, orthogonal
    assert float(global_local_loss(eye, eye.flip(1), 0.1)) > 10


def _batch(views, b=4, hw=40):
    return {"clips": [torch.randint(0, 255, (b, 3, len(v), hw, hw), dtype=torch.uint8)
                      for v in views],
            "valid_hw": torch.tensor([[hw, hw]] * b), "labels": torch.zeros(b, dtype=torch.long)}


def _grads_reach_every_parameter(method):
    views = method.views(64, np.random.default_rng(0))
    loss, parts = method(_batch(views), torch.Generator().manual_seed(0))
    loss.backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None]
    assert not missing, missing
    return parts


def test_simclr_and_tclr_send_gradients_to_encoder_and_heads():
    aug = AugConfig(size=32)
    torch.manual_seed(0)
    _grads_reach_every_parameter(SimCLR(SimCLRParams(clip_len=4), "r3d18-tiny", aug))
    parts = _grads_reach_every_parameter(
        TCLR(TCLRParams(clip_len=8, stride=1, n_local=2), "r3d18-tiny", aug))
    assert set(parts) == {"ic", "ll", "gl"}


def test_tclr_losses_switch_off():
    torch.manual_seed(0)
    method = TCLR(TCLRParams(clip_len=8, n_local=2, w_ic=0, w_gl=0), "r3d18-tiny",
                  AugConfig(size=32))
    views = method.views(64, np.random.default_rng(0))
    _, parts = method(_batch(views), None)
    assert set(parts) == {"ll"}
