"""The command surface: help, version, errors, placeholders, man pages, completion."""
import pytest

from conftest import ROOT, run_vssl, vssl_in_process

COMMANDS = ["extract", "pretrain", "finetune", "probe", "retrieve", "export", "import", "inspect",
            "synth"]


def test_version_and_help_list_every_command():
    assert run_vssl("--version", check=0).stdout.startswith("vssl, version")
    out = run_vssl("--help", check=0).stdout
    for name in COMMANDS:
        assert f"  {name}" in out


@pytest.mark.parametrize("args", [
    ["pretrain", "{x}", "-o", "{y}"], ["probe", "{x}", "--data", "{x}"],
    ["retrieve", "{x}", "--data", "{x}"], ["finetune", "{x}", "--data", "{x}", "-o", "{y}"],
    ["export", "{x}", "--format", "onnx"]])
def test_commands_name_a_missing_input(tmp_path, args):
    missing = tmp_path / "nothing"
    proc = run_vssl(*[a.format(x=missing, y=tmp_path / "out") for a in args])
    assert proc.returncode in (1, 2)
    assert proc.stderr.count("\n") == 1 and str(missing) in proc.stderr, proc.stderr
    assert proc.stdout == "" and not (tmp_path / "out").exists()


def test_usage_errors_are_one_line_exit_2(tmp_path):
    proc = run_vssl("extract", tmp_path, check=2)
    assert proc.stderr.strip() == "vssl extract: error: Missing option '-o' / '--output'."
    proc = run_vssl("extract", tmp_path, "-o", tmp_path / "x.zarr", "--size", "big", check=2)
    assert proc.stderr.count("\n") == 1 and "WIDTHxHEIGHT" in proc.stderr
    proc = run_vssl("nope", check=2)
    assert proc.stderr.startswith("vssl: error: No such command 'nope'")


def test_inspect_errors_name_the_file(tmp_path):
    proc = run_vssl("inspect", tmp_path / "missing", check=1)
    assert proc.stderr.strip() == f"vssl inspect: error: no such artifact ({tmp_path / 'missing'})"
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "manifest.json").write_text("{not json")
    proc = run_vssl("inspect", tmp_path / "art", check=1)
    assert "corrupt manifest" in proc.stderr and "manifest.json" in proc.stderr
    proc = run_vssl("inspect", "-", input="", check=2)
    assert "expected an artifact path on standard input" in proc.stderr


def test_man_pages_exist_and_match_the_click_definitions():
    from vssl_cli.cli.manpage import pages
    generated = pages()
    assert set(generated) == {"vssl.1", *(f"vssl-{c}.1" for c in COMMANDS)}
    for name, text in generated.items():
        committed = (ROOT / "man" / name)
        assert committed.exists(), f"man/{name} missing: run `make man`"
        assert committed.read_text() == text, f"man/{name} is stale: run `make man`"
    # click caches each command's help option on first use: a command run in this process
    # before or after must not change the pages (they once lost -h after an in-process run)
    assert vssl_in_process("pretrain", "-h")[0] == 0
    assert pages() == generated
    assert "\\fB\\-h, \\-\\-help\\fR" in generated["vssl-pretrain.1"]


def test_shell_completion_script():
    proc = run_vssl(env={"_VSSL_COMPLETE": "bash_source"}, check=0)
    assert "_vssl_completion" in proc.stdout


def test_launcher_runs_from_checkout():
    import subprocess
    proc = subprocess.run([str(ROOT / "bin" / "vssl"), "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "vssl" in proc.stdout
