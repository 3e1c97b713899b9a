"""bench/quality.py, the learning-quality guard: what it refuses, and that its settings are
ones synth and pretrain accept (a renamed option would otherwise fail only after an hour)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT, vssl_in_process

sys.path.insert(0, str(ROOT / "bench"))
import quality  # noqa: E402  (bench/ is scripts, not a package)


def _row(top1, spread=0.0, one=None, r1=None):
    mean = {"top1": top1, "top1_1clip": top1 if one is None else one,
            "R@1": top1 if r1 is None else r1}
    return {"mean": mean, "spread": {k: spread for k in quality.METRICS},
            "std": {k: spread / 2 for k in quality.METRICS}}


def test_guard_allows_the_seed_spread_and_refuses_more():
    ref = {"random": _row(0.20), "tclr": _row(0.50, spread=0.06), "simclr": _row(0.30)}
    assert quality.failures({"random": _row(0.20), "tclr": _row(0.45),
                             "simclr": _row(0.29)}, ref) == []
    problems = quality.failures({"random": _row(0.20), "tclr": _row(0.43),
                                 "simclr": _row(0.27)}, ref)
    assert [p.split(":")[0] for p in problems] == [
        "tclr top1", "tclr top1_1clip", "tclr R@1",
        "simclr top1", "simclr top1_1clip", "simclr R@1"]      # at least TOLERANCE
    # one metric alone is enough
    assert quality.failures({"tclr": _row(0.50, one=0.40)}, ref) == [
        "tclr top1_1clip: 0.400, stored 0.500 - 0.060 allowed"]


def test_guard_refuses_a_learner_that_no_longer_beats_random_init():
    ref = {"random": _row(0.20, spread=0.02), "simclr": _row(0.30, spread=0.08),
           "teg-ps": _row(0.23, spread=0.04), "vthcl": _row(0.18)}
    now = {"random": _row(0.31), "simclr": _row(0.30), "teg-ps": _row(0.23),
           "vthcl": _row(0.18)}
    # simclr learned in the reference (0.30 > 0.20 + its 0.08 spread); teg-ps sat within its
    # own seed spread of random init and is held to its own figure only; vthcl never was above
    assert quality.learners(ref) == ["simclr"]
    assert quality.failures(now, ref) == [
        "simclr top1: 0.300, no longer above random init (0.310)"]
    assert quality.failures({"tce": _row(0.0)}, ref) == []             # not in the reference


def test_summary_means_spreads_and_table():
    runs = [{"method": "tclr", "seed": s, "top1": t, "top1_1clip": t - 0.1, "R@1": t / 2,
             "train_seconds": 100.0 + s} for s, t in ((1, 0.5), (0, 0.4))]
    rows = quality.summarise(runs)
    assert [r["seed"] for r in rows["tclr"]["seeds"]] == [0, 1]
    assert rows["tclr"]["mean"]["top1"] == pytest.approx(0.45)
    assert rows["tclr"]["spread"]["R@1"] == pytest.approx(0.05)
    assert (f"| tclr | {quality.EPOCHS['tclr']} | 0.450 +- 0.050 | 0.350 +- 0.050 | "
            "0.225 +- 0.025 | 0.400, 0.500 | 100 |") in quality.table(rows)


def _results(path, seeds, epochs=4, setting="a"):
    runs = [{"method": "tclr", "seed": s, "top1": t, "top1_1clip": t, "R@1": t,
             "train_seconds": 10.0} for s, t in seeds]
    rows = quality.summarise(runs)
    rows["tclr"]["epochs"] = epochs
    path.write_text(json.dumps({"benchmark": {"synth": [setting]}, "methods": rows}))
    return path


def test_runs_of_several_files_pool_into_one_table_with_standard_errors(tmp_path, capsys,
                                                                       monkeypatch):
    ref = _results(tmp_path / "ref.json", [(0, 0.30), (1, 0.20)])
    more = _results(tmp_path / "more.json", [(2, 0.25), (3, 0.29)])
    rows = quality.pooled([ref, more])
    assert [r["seed"] for r in rows["tclr"]["seeds"]] == [0, 1, 2, 3]
    assert rows["tclr"]["mean"]["top1"] == pytest.approx(0.26)
    # the standard error of the mean: the sample deviation over the root of the seeds
    assert rows["tclr"]["sem"]["R@1"] == pytest.approx(0.04546 / 2, abs=1e-4)
    monkeypatch.setattr(sys, "argv", ["quality.py", "--pool", str(ref), str(more)])
    quality.main()
    assert "| tclr | 4 | 0.260 +- 0.023 |" in capsys.readouterr().out
    for bad, why in ((_results(tmp_path / "again.json", [(1, 0.2)]), "seed 1 is in an earlier"),
                     (_results(tmp_path / "long.json", [(5, 0.2)], epochs=13), "trained 13"),
                     (_results(tmp_path / "other.json", [(5, 0.2)], setting="b"),
                      "another benchmark setting")):
        with pytest.raises(SystemExit, match=why):
            quality.pooled([ref, bad])


@pytest.mark.parametrize("method", sorted(set(quality.EPOCHS) - {"random", "supervised"})
                         + quality.ablations())
def test_every_method_setting_resolves_at_the_benchmark_size(method, tmp_path):
    settings = [str(a) for a in quality.RUNNABLE[method]]
    name = [] if "--method" in settings else ["--method", method]
    code, out, err = vssl_in_process("pretrain", tmp_path, "-o", tmp_path / "run",
                                     *map(str, quality.PRETRAIN), *name, *settings,
                                     "--dry-run")
    assert code == 0, err
    assert json.loads(out)["aug"]["size"] == quality.SIZE


def test_the_benchmark_set_is_one_synth_accepts(tmp_path):
    """The benchmark's synth options, on a few small videos."""
    args = [str(a) for a in quality.SYNTH]
    args[args.index("--videos-per-class") + 1] = "3"
    code, out, err = vssl_in_process("synth", tmp_path / "s", *args, "--classes", "2",
                                     "--frames", "8")
    assert code == 0, err
    config = json.loads((tmp_path / "s" / "synth.json").read_text())["config"]
    assert config["placement"] == "free" and config["speed"] == 1.5


def test_supervised_ceiling_settings_are_applied_to_the_finetune():
    from vssl_cli.engine.config import parse_set, resolve
    from vssl_cli.methods.supervised import Supervised
    sets = [*quality.SUPERVISED_SETS, *quality.SUPERVISED]
    config = resolve(Supervised.Params, str(quality.RECIPE), {}, sets)
    for key, value in parse_set(sets):
        section, _, name = key.rpartition(".")
        got = config[section][name] if section else config[name]
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_a_reference_needs_a_learnable_set_that_random_init_does_not_solve():
    assert quality.unfit_reference({"random": _row(0.15), "supervised": _row(0.90),
                                    "tclr": _row(0.40)}) == []
    assert [p.split(" (")[0].split(":")[0] for p in quality.unfit_reference(
        {"random": _row(0.35), "supervised": _row(0.14), "tclr": _row(0.36)})] == [
        "the labels reach 0.140", "random init reaches 0.350",
        "no method learns beyond random init at this budget"]


def test_a_learner_beats_random_init_by_more_than_the_seed_spreads():
    rows = {"random": _row(0.13, spread=0.04), "supervised": _row(0.87),
            "tclr": _row(0.16, spread=0.01), "simclr": _row(0.17, spread=0.05),
            "teg-ps": _row(0.19, spread=0.02)}
    assert quality.learners(rows) == ["teg-ps"]   # tclr within random's spread, simclr its own
    assert quality.unfit_reference({"tclr": _row(0.5)}) == [
        "a reference needs the supervised and random rows"]


def test_check_without_a_reference_fails_at_once(tmp_path, monkeypatch):
    """No hour of training before saying there is nothing to guard against."""
    monkeypatch.setattr(quality, "RESULTS", tmp_path / "results")
    for name in ("TRAIN_ROOT", "THREADS"):                 # main() sets them
        monkeypatch.setattr(quality, name, getattr(quality, name))
    monkeypatch.setattr(sys, "argv", ["quality.py", "--check", "--work", str(tmp_path / "w")])
    with pytest.raises(SystemExit, match="no reference to guard"):
        quality.main()
    assert not (tmp_path / "w").exists()                  # nothing built


@pytest.mark.parametrize("other", [["--threads", "2"], ["--epochs", "simclr=12"],
                                   ["--train-code", "/tmp"], ["--methods", "ctrlaug-no-mi"]])
def test_what_measures_something_else_cannot_check_or_update(other, tmp_path, monkeypatch,
                                                             capsys):
    for name in ("TRAIN_ROOT", "THREADS"):                 # main() sets them
        monkeypatch.setattr(quality, name, getattr(quality, name))
    monkeypatch.setattr(quality, "EPOCHS", dict(quality.EPOCHS))
    for mode in ("--check", "--update"):
        monkeypatch.setattr(sys, "argv", ["quality.py", mode, *other, "--work", str(tmp_path)])
        with pytest.raises(SystemExit) as exit_:
            quality.main()
        assert exit_.value.code == 2 and "not with --check or --update" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_runs_are_cached_per_set_code_and_thread_count(tmp_path):
    """Another set (SYNTH changed) must not reuse the runs trained on the old one."""
    folders = []
    for set_id in ("aaaa", "bbbb"):
        synth = tmp_path / set_id
        synth.mkdir()
        (synth / "synth.json").write_text(json.dumps({"id": set_id}))
        folders.append(quality.runs_folder(tmp_path / "work", synth, ROOT, 1))
    assert folders[0] != folders[1] and folders[0].name.startswith("aaaa-")
    assert quality.code_key(ROOT) in folders[0].name
    assert quality.runs_folder(tmp_path / "work", synth, ROOT, 2).parent == folders[1]


def test_the_settings_digest_does_not_depend_on_where_the_clone_lives():
    assert not any(Path(str(a)).is_absolute() for a in quality.PRETRAIN)


def test_runs_are_cached_per_benchmark_setting(tmp_path, monkeypatch):
    """Runs trained with other augmentation or epochs must not be reused either."""
    synth = tmp_path / "set"
    synth.mkdir()
    (synth / "synth.json").write_text(json.dumps({"id": "aaaa"}))
    before = quality.runs_folder(tmp_path / "work", synth, ROOT, 1)
    monkeypatch.setitem(quality.EPOCHS, "tclr", quality.EPOCHS["tclr"] + 1)
    longer = quality.runs_folder(tmp_path / "work", synth, ROOT, 1)
    monkeypatch.setattr(quality, "PRETRAIN", [*quality.PRETRAIN, "--set", "aug.flip_p=0.5"])
    assert len({before, longer, quality.runs_folder(tmp_path / "work", synth, ROOT, 1)}) == 3


def test_other_epochs_parse_and_unknown_methods_are_refused():
    assert quality.parse_epochs("simclr=12,tclr=4") == {"simclr": 12, "tclr": 4}
    assert quality.parse_epochs("") == {}
    for bad in ("moco=3", "simclr=", "simclr=1.5"):
        with pytest.raises(ValueError, match="METHOD=N"):
            quality.parse_epochs(bad)


def test_ablations_vary_a_guard_method_and_train_as_long_as_it():
    """An ablation says why a guard method falls short, so it runs the guard's budget for
    that method; settings of methods the guard does not train (TCE) are not offered."""
    names = quality.ablations()
    assert {"ctrlaug-no-mi", "teg", "vthcl-current", "tclr-ic-only"} <= set(names)
    assert "tce" not in names and not set(names) & set(quality.EPOCHS)
    assert quality.epochs_of("teg") == quality.EPOCHS["teg-ps"]
    assert quality.epochs_of("ctrlaug-no-mi") == quality.EPOCHS["ctrlaug"]
    assert quality.parse_epochs("teg=6") == {"teg": 6}


def test_runs_are_cached_per_ablation_setting(tmp_path, monkeypatch):
    """An edited ablation trains anew rather than reusing the runs of the old one."""
    synth = tmp_path / "set"
    synth.mkdir()
    (synth / "synth.json").write_text(json.dumps({"id": "aaaa"}))
    before = quality.runs_folder(tmp_path / "work", synth, ROOT, 1)
    monkeypatch.setitem(quality.RUNNABLE, "teg-fine", [*quality.RUNNABLE["teg-fine"], "--set",
                                                        "tau=0.2"])
    assert quality.runs_folder(tmp_path / "work", synth, ROOT, 1) != before
