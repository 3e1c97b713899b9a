"""Pretraining methods: samplers, losses against direct recomputation, gradient flow."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vssl_cli.data.augment import AugConfig
from vssl_cli.methods.simclr import SimCLR, SimCLRParams
from vssl_cli.methods.tclr import TCLR, TCLRParams, global_local_loss, local_local_loss, tclr_views
from vssl_cli.methods.vthcl import VTHCL, VTHCLParams, bank_contrast, tempo_views


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
            "valid_hw": torch.tensor([[hw, hw]] * b), "labels": torch.zeros(b, dtype=torch.long),
            "index": torch.arange(b)}


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


def test_vthcl_slow_and_fast_clips_cover_the_same_window():
    rng = np.random.default_rng(0)
    for n in (30, 64, 200):
        slow, fast = tempo_views(n, 8, 8, 2, rng)
        assert len(slow) == 8 and len(fast) == 16
        assert all(0 <= v.min() and v.max() < n for v in (slow, fast))
        if n >= 64:
            assert (fast[::2] == slow).all() and (np.diff(fast) == 4).all()


def test_bank_contrast_matches_a_loop_with_the_whole_bank_and_with_sampled_negatives():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(3, 8), dim=1)
    bank = F.normalize(torch.randn(10, 8), dim=1)
    index = torch.tensor([4, 0, 7])
    want = sum(_nce(q[i], list(bank), int(index[i]), 0.07) for i in range(3)) / 3
    assert abs(float(bank_contrast(q, bank, index, 16384, 0.07, None)) - want) < 1e-4
    current = F.normalize(torch.randn(3, 8), dim=1)       # positive from the batch
    want = sum(_nce(q[i], [current[i]] + [bank[j] for j in range(10) if j != index[i]], 0, 0.07)
               for i in range(3)) / 3
    assert abs(float(bank_contrast(q, bank, index, 99, 0.07, None, current)) - want) < 1e-4
    draw = torch.randint(0, 10, (3, 5), generator=torch.Generator().manual_seed(3))
    want = sum(_nce(q[i], [bank[index[i]]] + [bank[j] for j in draw[i] if j != index[i]], 0,
                    0.07) for i in range(3)) / 3
    got = bank_contrast(q, bank, index, 5, 0.07, torch.Generator().manual_seed(3))
    assert abs(float(got) - want) < 1e-4


def test_bank_contrast_known_values():
    bank = torch.eye(6)
    index = torch.arange(6)
    assert float(bank_contrast(bank, bank, index, 100, 0.07, None)) < 1e-4     # own row
    assert float(bank_contrast(bank.roll(1, 0), bank, index, 100, 0.07, None)) > 10


def _vthcl(**kw):
    torch.manual_seed(0)
    method = VTHCL(VTHCLParams(clip_len=4, stride=4, **kw), "r3d18-tiny", AugConfig(size=32))
    method.attach_dataset(6)
    return method


def test_vthcl_sends_gradients_to_both_encoders_and_every_level_head():
    method = _vthcl()
    parts = _grads_reach_every_parameter(method)
    assert set(parts) == {f"{q}_{lv}" for q in "fs" for lv in ("res3", "res4", "res5")}
    assert method.fast_encoder.out_dim == method.encoder.out_dim // 2
    assert "bank_slow_res5" in method.state_dict()           # checkpoints carry the banks


def test_vthcl_updates_its_banks_as_an_ema_of_the_batch():
    method = _vthcl(levels=("res5",), level_weights=(1.0,), bank_momentum=0.5).eval()
    before = method.bank_fast_res5.clone()
    batch = _batch(method.views(64, np.random.default_rng(0)))
    method(batch, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)                   # replay the two augmentations
    method.augmented(batch["clips"][0], batch, gen)
    fast, _ = method.augmented(batch["clips"][1], batch, gen)
    z = method.embed(method.fast_encoder(fast), "fast")["res5"]
    want = F.normalize(0.5 * before[:4] + 0.5 * z, dim=1)
    assert torch.allclose(method.bank_fast_res5[:4], want, atol=1e-5)
    assert torch.equal(method.bank_fast_res5[4:], before[4:])          # untouched rows


def test_vthcl_rejects_bad_levels_and_tempo():
    import pytest
    with pytest.raises(ValueError, match="levels"):
        _vthcl(levels=("res9",), level_weights=(1.0,))
    with pytest.raises(ValueError, match="multiple of alpha"):
        VTHCL(VTHCLParams(stride=3, alpha=2), "r3d18-tiny", AugConfig(size=32))


def test_vthcl_correspondence_map_is_a_cosine_map_over_the_slow_clip():
    method = _vthcl().eval()
    slow = torch.rand(2, 3, 4, 32, 32)
    fast = torch.rand(2, 3, 8, 32, 32)
    icm = method.correspondence_map(slow, fast)
    t = method.encoder(slow)["res5"].shape[2:]
    assert icm.shape == (2, *t) and icm.abs().max() <= 1 + 1e-5
