"""Every `dermvqa` command fails with one `error:` line naming the bad file or argument, exit 2, no traceback.

The cases run the entry point (`dermvqa.cli.app`, what the console script calls) in this process through
`app.run`, which returns the exit code `app()` exits with; one test runs the real `python -m dermvqa.cli`
to check the exit code, the silence and the --debug switches.
"""
import os
import subprocess
import sys

import pytest
import typer

from dermvqa.cli import app
from tests.conftest import ONTOLOGY, REPO, SAMPLE_CSV


def _bad_csv(tmp):
    """A Derm1M-format CSV without most of its columns."""
    path = tmp / "bad.csv"
    path.write_text("filename,caption\na.png,a red plaque\n")
    return path


# command path -> (arguments after it, given the test's tmp folder; text the error line must name)
CASES = {
    ("quickstart",): (lambda t: ["--recipe", str(t / "nope.yaml"), "--out", str(t / "q")], "nope.yaml"),
    ("train",): (lambda t: [str(t / "nope.yaml")], "nope.yaml"),
    ("convert-dermlip",): (lambda t: [str(t / "nope"), "--out", str(t / "c")], "nope"),
    ("convert-llava-original",): (lambda t: [str(t / "nope"), "--out", str(t / "c")], "nope"),
    ("build",): (lambda t: ["--vision", str(t / "nope"), "--llm", str(t / "nope"), "--out", str(t / "b")], "nope"),
    ("eval",): (lambda t: ["--model", str(t), "--bench", "foo:bar", "--out", str(t / "e")], "foo:bar"),
    ("eval", "compare"): (lambda t: [str(t / "nope_a"), str(t / "nope_b")], "nope_a"),
    ("eval", "merge"): (lambda t: ["--out", str(t / "m"), str(t / "nope_s1"), str(t / "nope_s2")], "nope_s1"),
    ("data", "synth"): (lambda t: ["--csv", str(_bad_csv(t)), "--ontology", str(ONTOLOGY), "--out", str(t / "s")],
                        "bad.csv"),
    ("data", "export-llava"): (lambda t: ["--qa", str(t / "nope"), "--out", str(t / "x.json")], "nope"),
    ("data", "export-preference"): (lambda t: ["--qa", str(t / "nope"), "--out", str(t / "p.jsonl")], "nope"),
    ("data", "teach"): (lambda t: ["--qa", str(t), "--csv", str(SAMPLE_CSV), "--model", str(t / "nope"),
                                   "--out", str(t / "t")], "nope"),
    ("data", "import", "ham10000"): (lambda t: ["--metadata", str(t / "nope.csv"), "--images", str(t),
                                                "--out", str(t / "h"), "--ontology", str(t / "nope.json")],
                                     "nope.json"),
    ("data", "import", "pad-ufes-20"): (lambda t: ["--metadata", str(t / "nope.csv"), "--images", str(t),
                                                   "--out", str(t / "p"), "--ontology", str(t / "nope.json")],
                                        "nope.json"),
    ("data", "import", "fitzpatrick17k"): (lambda t: ["--metadata", str(t / "nope.csv"), "--images", str(t),
                                                      "--out", str(t / "f"), "--ontology", str(t / "nope.json")],
                                           "nope.json"),
    ("chat",): (lambda t: ["--model", str(t / "nope")], "nope"),
    ("report",): (lambda t: ["--model", str(t), "--image", str(t / "nope.png")], "nope.png"),
    ("ood-fit",): (lambda t: ["--model", str(t), "--qa", str(t / "nope_qa"), "--images", str(t)], "nope_qa"),
    ("ood-choose",): (lambda t: ["--model", str(t), "--qa", str(t / "nope_qa"), "--images", str(t), "--reference",
                                 str(t)], "nope_qa"),
    ("alert-fit",): (lambda t: ["--model", str(t), "--qa", str(t / "nope_qa"), "--images", str(t)], "nope_qa"),
    ("serve", "web"): (lambda t: ["--model", str(t / "nope")], "nope"),
    ("serve", "api"): (lambda t: ["--model", str(t / "nope")], "nope"),
    ("export",): (lambda t: [str(t / "nope"), "--out", str(t / "x")], "nope"),
}


def _leaf_commands(cmd, path=()) -> set:
    """Command paths a user can run: leaves, plus groups that run on their own (`dermvqa eval`)."""
    subs = getattr(cmd, "commands", None)
    if not subs:
        return {path}
    own = {path} if getattr(cmd, "invoke_without_command", False) else set()
    return own.union(*(_leaf_commands(sub, path + (name,)) for name, sub in subs.items()))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert "Traceback" not in err
    return lines[0]


def test_every_command_has_a_case():
    assert _leaf_commands(typer.main.get_command(app)) == set(CASES)


@pytest.mark.parametrize("path", sorted(CASES), ids=" ".join)
def test_bad_argument_or_file_is_one_line_exit_2(path, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DERMVQA_DEBUG", raising=False)
    make_args, named = CASES[path]
    code = app.run([*path, *make_args(tmp_path)])
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert code == 2, line
    assert named in line and "Traceback" not in out


def test_usage_errors_name_the_option_and_the_help(capsys):
    assert app.run(["data", "synth", "--csv", "x.csv"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--ontology" in line and "dermvqa data synth --help" in line
    assert app.run(["trian"]) == 2
    assert "trian" in _one_error_line(capsys.readouterr().err)


def test_runtime_failure_is_exit_1_and_names_the_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DERMVQA_DEBUG", raising=False)

    def broken(a, b):
        raise RuntimeError("the disk went away\nsecond line")

    monkeypatch.setattr("dermvqa.eval.compare.compare", broken)
    assert app.run(["eval", "compare", str(tmp_path), str(tmp_path)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == "error: RuntimeError: the disk went away second line (--debug shows the traceback)"


def test_real_process_is_quiet_and_debug_shows_the_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DERMVQA_DEBUG"}
    cmd = [sys.executable, "-m", "dermvqa.cli", "eval", "compare", str(tmp_path / "nope_a"), str(tmp_path / "b")]

    def run(extra=(), **env_extra):
        return subprocess.run([*cmd, *extra], cwd=REPO, env={**env, **env_extra}, capture_output=True, text=True)

    quiet = run()
    assert quiet.returncode == 2 and quiet.stdout == ""
    assert quiet.stderr.splitlines() == [f"error: no metrics.json at {tmp_path / 'nope_a'}"], quiet.stderr
    for loud in (run(["--debug"]), run(DERMVQA_DEBUG="1")):
        assert loud.returncode == 2 and "Traceback (most recent call last)" in loud.stderr
        assert loud.stderr.rstrip().endswith(f"error: no metrics.json at {tmp_path / 'nope_a'}")
