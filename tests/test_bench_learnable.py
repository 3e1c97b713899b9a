"""bench/learnable.py's training variants must be settings the finetune accepts and applies
(a renamed config key would otherwise fail only after an hour of benchmark)."""
from __future__ import annotations

import sys

import pytest

from conftest import ROOT
from vssl_cli.engine.config import parse_set, resolve
from vssl_cli.methods.supervised import Supervised

sys.path.insert(0, str(ROOT / "bench"))
import learnable  # noqa: E402  (bench/ is scripts, not a package)
import methods  # noqa: E402


@pytest.mark.parametrize("variant", sorted(learnable.VARIANTS))
def test_variant_overrides_are_applied_to_the_finetune_config(variant):
    sets = [*methods.SUPERVISED_SETS, *learnable.VARIANTS[variant]]
    config = resolve(Supervised.Params, str(methods.RECIPE), {}, sets)
    for key, value in parse_set(sets):
        section, _, name = key.rpartition(".")
        got = config[section][name]
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    if variant == "no-aug":
        assert config["aug"]["scale"] == (1.0, 1.0) and config["aug"]["jitter_p"] == 0
