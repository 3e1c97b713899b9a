"""Every shipped recipe runs: one training step of each at toy size (only the batch size,
the image size and the number of steps are overridden), so a recipe can never rot."""
from __future__ import annotations

import pytest

from conftest import ROOT, manifest_of, vssl_in_process

RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_runs_a_step(recipe, tiny_frames, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = vssl_in_process(
        "-q", "pretrain", tiny_frames, "-o", out, "--recipe", recipe, "--max-steps", "1",
        "--batch-size", "4", "--set", "aug.size=32", "--workers", "0", "--device", "cpu")
    assert code == 0, err
    assert stdout.strip() == str(out) and manifest_of(out)["metrics"]["steps"] == 1


def test_a_recipe_that_cannot_run_fails_when_resolved(tmp_path):
    """TeG's step count against its backbone is checked with --dry-run, not after the data
    is loaded (it was "internal error: ValueError" at the first step)."""
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "recipes" / "teg-k400.toml").read_text().replace(
        "step_frames = 2", "step_frames = 4"))
    code, _, err = vssl_in_process("pretrain", tmp_path, "-o", tmp_path / "r", "--recipe", bad,
                                   "--dry-run")
    assert code == 2 and "params.step_frames = 2" in err and err.count("\n") == 1
