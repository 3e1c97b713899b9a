"""bench/shortcut.py's collapse figures: they must tell collapsed features from spread ones."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import shortcut  # noqa: E402  (bench/ is scripts, not a package)


def test_effective_rank_is_one_for_collapsed_and_d_for_isotropic_features():
    rng = np.random.default_rng(0)
    collapsed = rng.normal(size=(200, 1)) * rng.normal(size=(1, 16))   # rank 1
    assert shortcut.effective_rank(collapsed) == pytest.approx(1.0, abs=1e-3)
    isotropic = np.linalg.qr(rng.normal(size=(200, 16)))[0]            # equal singular values
    assert shortcut.effective_rank(isotropic) == pytest.approx(16.0, rel=1e-6)
    spread = rng.normal(size=(2000, 16))
    assert 14 < shortcut.effective_rank(spread) < 16


def test_mean_cosine_between_videos():
    same = np.tile([[1.0, 2.0, 3.0]], (5, 1))
    assert shortcut.mean_cosine_between(same) == pytest.approx(1.0)
    assert shortcut.mean_cosine_between(np.eye(4)) == pytest.approx(0.0)
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert shortcut.mean_cosine_between(opposite) == pytest.approx(-1.0)


def test_measure_reports_collapse_and_seed_means_skip_figures_older_rows_lack():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 5)
    spread = {"moving": rng.normal(size=(20, 2, 8)), "labels": labels}
    spread["still"] = spread["moving"] + 0.1 * rng.normal(size=(20, 2, 8))
    one = rng.normal(size=(1, 1, 8))
    collapsed = {"moving": one + 1e-3 * rng.normal(size=(20, 2, 8)), "labels": labels}
    collapsed["still"] = collapsed["moving"]
    a, b = shortcut.measure(spread), shortcut.measure(collapsed)
    assert a["rankme"] > 5 and b["rankme"] < a["rankme"]
    assert b["cos_between_videos"] > 0.99 > a["cos_between_videos"]
    old = {k: v for k, v in a.items() if k not in ("rankme", "cos_between_videos")}
    means = shortcut.seed_means({"m": a, "m-s1": old, "n": b})
    assert "rankme" not in means["m"] and means["m"]["seeds"] == 2
    assert means["n"]["rankme"] == pytest.approx(b["rankme"])
