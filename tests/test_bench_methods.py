"""bench/methods.py's settings must be ones pretrain accepts and applies: a renamed
parameter in an ablation would otherwise fail, or silently train the full method, only
after an hour of benchmark."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, vssl_in_process
from vssl_cli.engine.config import parse_set

sys.path.insert(0, str(ROOT / "bench"))
import methods  # noqa: E402  (bench/ is scripts, not a package)


@pytest.mark.parametrize("name", sorted(set(methods.RUNNABLE) - {"supervised"}))
def test_every_benchmark_setting_resolves_and_is_applied(name, tmp_path):
    args = [str(a) for a in methods.RUNNABLE[name]]
    method = [] if "--method" in args else ["--method", name]
    code, out, err = vssl_in_process("pretrain", tmp_path, "-o", tmp_path / "run", "--recipe",
                                     methods.RECIPE, *method, *args, "--dry-run")
    assert code == 0, err
    config = json.loads(out)
    assert config["method"] == (args[args.index("--method") + 1] if "--method" in args
                                else name)
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    for key, value in parse_set(sets):
        got = config["params"].get(key, config.get(key))
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_table_rows_are_the_stored_results_and_appear_in_the_readme():
    """The benchmarks doc's table of the cue-free plain set is what markdown_table prints from
    bench/results/methods_plain_free.json: a column added to one and not the other, or a
    figure edited by hand, fails here."""
    stored = json.loads((ROOT / "bench/results/methods_plain_free.json").read_text())
    table = methods.markdown_table(stored["methods"], stored["epochs"]).splitlines()
    assert "probe 1 clip (random)" in table[0]
    readme = (ROOT / "docs" / "benchmarks.md").read_text()
    for line in table:
        assert line in readme, line
