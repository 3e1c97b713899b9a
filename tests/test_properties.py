"""Property tests: every method's view sampler, the list parser and the manifest loader
hold their contracts for any input (hypothesis)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vssl_cli.artifacts import parse_manifest
from vssl_cli.errors import VsslError
from vssl_cli.methods.ctrlaug import local_global_views
from vssl_cli.methods.tce import nearby_pair
from vssl_cli.methods.tclr import tclr_views
from vssl_cli.methods.teg import long_short_views
from vssl_cli.methods.vthcl import tempo_views
from vssl_cli.video.datasets import parse_list

lengths = st.integers(1, 400)
seeds = st.integers(0, 2**31 - 1)


def _in_range(views, n, sizes):
    assert [len(v) for v in views] == sizes
    assert all(v.min() >= 0 and v.max() < n for v in views)


@given(lengths, st.integers(1, 16), st.integers(1, 4), st.integers(1, 6), seeds)
def test_tclr_views(n, clip_len, stride, n_local, seed):
    views = tclr_views(n, clip_len, stride, n_local, np.random.default_rng(seed))
    _in_range(views, n, [clip_len] * (n_local + 1))


@given(lengths, st.integers(1, 16), st.integers(1, 4), st.integers(1, 4), seeds)
def test_vthcl_views(n, clip_len, per, alpha, seed):
    slow, fast = tempo_views(n, clip_len, per * alpha, alpha, np.random.default_rng(seed))
    _in_range([slow, fast], n, [clip_len, clip_len * alpha])
    if n >= clip_len * per * alpha:                        # no looping: same first frame
        assert slow[0] == fast[0]


@given(lengths, st.integers(1, 8), st.integers(0, 8), st.integers(1, 3), seeds)
def test_teg_views(n, short_steps, extra_steps, stride, seed):
    short, long = long_short_views(n, 4 * short_steps, 4 * (short_steps + extra_steps), stride,
                                   4, np.random.default_rng(seed))
    _in_range([short, long], n, [4 * short_steps, 4 * (short_steps + extra_steps)])
    offset = int(short[0]) - int(long[0])
    assert offset % (4 * stride) == 0 and 0 <= offset // (4 * stride) <= extra_steps


@given(lengths, st.integers(1, 16), st.integers(1, 3), st.integers(1, 6), st.integers(1, 32),
       seeds)
def test_ctrlaug_views(n, clip_len, stride, n_local, global_len, seed):
    views = local_global_views(n, clip_len, stride, n_local, global_len,
                               np.random.default_rng(seed))
    _in_range(views, n, [global_len] + [clip_len] * n_local)
    assert (np.diff(views[0]) >= 0).all()                  # the global video is in order


@given(lengths, st.integers(1, 16), seeds)
def test_tce_views(n, window, seed):
    (a,), (b,) = nearby_pair(n, window, np.random.default_rng(seed))
    assert 0 <= a < n and 0 <= b < n and abs(a - b) <= window and (a != b or n == 1)


@settings(max_examples=200)
@given(st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=8))
@example(["~0"])                  # an unknown user's home: expanduser raises RuntimeError
@example(["a\x00b  label"])      # a NUL byte: path functions raise ValueError
def test_list_parser_gives_entries_or_a_clear_error(lines):
    try:
        entries = parse_list(lines, Path("/data"), "list.txt")
    except VsslError as e:
        assert "list.txt" in str(e) or e.path == "list.txt"
        return
    meaningful = [ln for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    assert len(entries) == len(meaningful)


@settings(max_examples=200)
@given(st.one_of(st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                              max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_manifest_loader_accepts_only_manifests_and_says_why(data):
    try:
        manifest = parse_manifest(data, "m.json")
    except VsslError as e:
        assert "m.json" in str(e) or e.path == "m.json"
        return
    assert isinstance(manifest, dict) and "kind" in manifest
