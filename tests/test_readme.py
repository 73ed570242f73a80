"""README.md stays short and true: every command in its ```bash blocks (and docs/*.md's) still parses against the code.

A `dermvqa ...` line must name an existing subcommand with options that command has (click parses the line,
resiliently, so required values and existing paths are not demanded); `dermvqa train CONFIG --key=value` and
the `scripts/train_*.sh` launchers must name recipe keys that CONFIG has. A `python -m X` line must name an
importable module, a `bash scripts/X.sh` line an existing script. Any other line in a bash block fails, so
the README cannot hold a command this test does not check.
"""
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import typer

from dermvqa.cli import app, error_line
from dermvqa.train.recipe import load_recipe
from tests.conftest import REPO

README = REPO / "README.md"
MAX_README_LINES = 260
TRAIN_LAUNCHERS = ("scripts/train_1gpu.sh", "scripts/train_8gpu.sh", "scripts/train_multinode.sh")


class StaleCommand(Exception):
    """A README command that no longer matches the code; the message names the command and the problem."""


def bash_commands(markdown: str) -> list[str]:
    """The commands of the ```bash blocks: `\\` continuations joined, `a && b` as two commands."""
    commands, fence, pending = [], None, ""
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence != "bash" or not (pending or line.strip()):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        tokens = shlex.split(pending, comments=True)
        pending = ""
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            commands.append(shlex.join(tokens[:cut]))
            tokens = tokens[cut + 1:]
    return commands


def check_recipe(args: list[str], command: str) -> None:
    """`CONFIG --section.key=value ...`: the recipe exists and has every overridden key."""
    config, *overrides = args
    try:
        load_recipe(REPO / config, overrides)
    except (ValueError, FileNotFoundError) as e:
        raise StaleCommand(f"{command}: {e}") from None


def check_dermvqa(args: list[str], command: str) -> None:
    """Walk the typer app down the subcommand path, letting click parse each level's options."""
    cmd, name, ctx = typer.main.get_command(app), "dermvqa", None
    while True:
        # click's parser alone, strictly: an unknown option or one without its value raises (a resilient parse
        # swallows that); the resilient parse then walks on without demanding required values or real paths
        strict = cmd.context_class(cmd, info_name=name, parent=ctx, **cmd.context_settings)
        try:
            cmd.make_parser(strict).parse_args(list(args))
        except Exception as e:  # click's usage errors (typer vendors its own click)
            raise StaleCommand(f"{command}: {error_line(e)}") from None
        ctx = cmd.make_context(name, list(args), parent=ctx, resilient_parsing=True)
        if not hasattr(cmd, "commands"):
            break
        args = [*ctx._protected_args, *ctx.args]  # a group keeps its subcommand's name apart, as typer reads it
        if not args:
            if not cmd.invoke_without_command:
                raise StaleCommand(f"{command}: '{ctx.command_path}' needs a subcommand ({', '.join(cmd.commands)})")
            return
        name, *args = args
        if name not in cmd.commands:
            raise StaleCommand(f"{command}: '{ctx.command_path}' has no command {name!r} "
                               f"(it has {', '.join(cmd.commands)})")
        cmd = cmd.commands[name]
    if ctx.command_path == "dermvqa train":
        check_recipe([str(ctx.params["config"]), *ctx.args], command)
    elif ctx.args:
        raise StaleCommand(f"{command}: unexpected argument(s) {' '.join(ctx.args)} for '{ctx.command_path}'")


def check_command(command: str) -> None:
    """Raise StaleCommand unless the command line still names something that exists, as described above."""
    tokens = shlex.split(command)
    while tokens and "=" in tokens[0] and not tokens[0].startswith("-"):  # VAR=value before the command
        tokens = tokens[1:]
    program = Path(tokens[0]).name if tokens else ""
    if program == "dermvqa":
        check_dermvqa(tokens[1:], command)
    elif program in ("python", "python3") and tokens[1:2] == ["-m"] and len(tokens) > 2:
        try:
            found = importlib.util.find_spec(tokens[2]) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            raise StaleCommand(f"{command}: no module {tokens[2]!r}")
    elif program == "bash" and len(tokens) > 1 and tokens[1].startswith("scripts/"):
        if not (REPO / tokens[1]).is_file():
            raise StaleCommand(f"{command}: no file {tokens[1]}")
        if tokens[1] in TRAIN_LAUNCHERS and len(tokens) > 2:
            check_recipe(tokens[2:], command)
    else:
        raise StaleCommand(f"{command}: not a command this test checks (dermvqa, python -m, bash scripts/)")


COMMANDS = bash_commands(README.read_text(encoding="utf-8"))
DOCS_COMMANDS = [(doc.name, c) for doc in sorted((REPO / "docs").glob("*.md"))
                 for c in bash_commands(doc.read_text(encoding="utf-8"))]


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; keep it to {MAX_README_LINES} (details: docs/)"


def test_readme_setup_runs_what_ci_runs():
    """The set-up's two commands: the quickstart on a fresh machine, and the tests exactly as .ci/run runs them."""
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci and all(line in COMMANDS for line in ci), f"README.md lacks CI's commands {ci}"
    assert COMMANDS[:2] == ["bash scripts/install.sh", ".venv/bin/dermvqa quickstart --out runs/quickstart"]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:70] for c in COMMANDS])
def test_readme_command_parses(command):
    check_command(command)


@pytest.mark.parametrize("doc, command", DOCS_COMMANDS, ids=[f"{d}: {c[:60]}" for d, c in DOCS_COMMANDS])
def test_docs_command_parses(doc, command):
    check_command(command)


def test_bash_commands_reads_only_bash_blocks():
    text = ("```\ndermvqa not-checked\n```\n```bash\ndermvqa chat --model m \\\n    --image x.png   # a comment\n\n"
            "bash scripts/install.sh && .venv/bin/python -m pytest -q tests\n```\n")
    assert bash_commands(text) == ["dermvqa chat --model m --image x.png", "bash scripts/install.sh",
                                   ".venv/bin/python -m pytest -q tests"]


@pytest.mark.parametrize("command, problem", [
    ("dermvqa no-such-command --out x", "has no command 'no-such-command'"),
    ("dermvqa data no-such-command", "'dermvqa data' has no command"),
    ("dermvqa data", "needs a subcommand"),
    ("dermvqa chat --model m --no-such-option 1", "No such option: --no-such-option"),
    ("dermvqa eval --model m --no-such-option 1 --out o", "No such option: --no-such-option"),
    ("dermvqa eval compare a b --no-such-option", "No such option: --no-such-option"),
    ("dermvqa chat --model m stray", "unexpected argument(s) stray"),
    ("dermvqa chat --image x.png --model", "Option '--model' requires an argument"),
    ("dermvqa train configs/tiny_cpu.yaml --train.no_such_key=1", "has no key 'no_such_key'"),
    ("bash scripts/train_1gpu.sh configs/tiny_cpu.yaml --no_such_section.lr=1", "has no section 'no_such_section'"),
    ("python -m dermvqa.no_such_module", "no module 'dermvqa.no_such_module'"),
    ("python -m no_such_package.module", "no module"),
    ("bash scripts/no_such_script.sh", "no file scripts/no_such_script.sh"),
    ("rm -rf runs", "not a command this test checks"),
])
def test_check_command_refuses_stale_commands(command, problem):
    with pytest.raises(StaleCommand, match=re.escape(problem)):
        check_command(command)


def test_check_command_accepts_real_forms():
    for command in ("dermvqa eval --model m --bench qa:x:test --no-blind --mode=likelihood --out o",
                    "DERMVQA_DEBUG=1 .venv/bin/dermvqa data import ham10000 --metadata m.csv --images i --out o",
                    "dermvqa train configs/tiny_cpu.yaml --train.seed=1 --resume",
                    "python -m pytest -q tests"):
        check_command(command)
