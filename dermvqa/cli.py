"""The `dermvqa` command: one subcommand per job, each a thin wrapper around a module.

Every command fails the same way: one `error: ...` line on stderr and exit code 2 for a bad argument
or input file (usage errors, missing or unreadable files, ValueError from input checks), 1 for any
other failure. `--debug` anywhere on the command line, or DERMVQA_DEBUG=1, also prints the traceback.
"""
import os
import sys
import traceback

import typer

from dermvqa.quickstart import quickstart
from dermvqa.train.cli import export, train
from dermvqa.model import commands as model_commands
from dermvqa.eval.cli import eval_app
from data_gen.cli import data_app
from dermvqa.serve import cli as serve_cli
from dermvqa.trust import cli as trust_cli

# Failures caused by what the user passed: exit code 2, like a usage error.
BAD_INPUT = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _usage_error(e: BaseException) -> bool:
    """A click-style usage error (typer's own copy of click or click itself): it carries its exit code."""
    return hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)


def error_line(e: BaseException) -> str:
    """The one-line message for an exception: its text on one line, the file an OSError names included."""
    if _usage_error(e):
        text = e.format_message()
        if getattr(e, "ctx", None) is not None:
            text += f" (see '{e.ctx.command_path} --help')"
    elif isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.strerror}: {e.filename}"
    else:
        text = str(e) or type(e).__name__
        if not isinstance(e, BAD_INPUT):  # unexpected: the type helps, the traceback more
            text = f"{type(e).__name__}: {text} (--debug shows the traceback)"
    return "error: " + " ".join(text.split())


class DermvqaApp(typer.Typer):
    """A Typer app whose call turns any failure into one `error:` line and an exit code (see the module doc)."""

    def __call__(self, args: list[str] | None = None):
        """Run the command line (sys.argv by default) and exit with its code, as a click app does."""
        sys.exit(self.run(args))

    def run(self, args: list[str] | None = None) -> int:
        """Run the command line and return its exit code."""
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args or os.environ.get("DERMVQA_DEBUG", "") not in ("", "0")
        args = [a for a in args if a != "--debug"]
        try:
            rv = typer.main.get_command(self).main(args, prog_name="dermvqa", standalone_mode=False)
            return rv if isinstance(rv, int) else 0
        except typer.Abort:
            code, message = 1, "error: aborted"
        except Exception as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `dermvqa` or `dermvqa data`: the help text
                e.show()
                return e.exit_code
            code = e.exit_code if _usage_error(e) else 2 if isinstance(e, BAD_INPUT) else 1
            message = error_line(e)
            if debug:
                traceback.print_exc()
        print(message, file=sys.stderr)
        return code


app = DermvqaApp(help="dermvqa: dermatology VQA data, training, chat, reports and benchmarks. Errors print one "
                      "line (exit 2: bad argument or file, 1: failure); --debug or DERMVQA_DEBUG=1 adds the "
                      "traceback.",
                 no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

# One registration line per command or sub-app; command bodies live in their own modules.
app.command("quickstart")(quickstart)
app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train)
app.command("convert-dermlip")(model_commands.convert_dermlip)
app.command("convert-llava-original")(model_commands.convert_llava_original)
app.command("build")(model_commands.build)
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.command("chat")(serve_cli.chat)
app.command("report")(serve_cli.report)
app.command("ood-fit")(trust_cli.ood_fit)
app.command("ood-choose")(trust_cli.ood_choose)
app.command("alert-fit")(trust_cli.alert_fit)
app.add_typer(serve_cli.serve_app, name="serve")
app.command("export")(export)

if __name__ == "__main__":  # `python -m dermvqa.cli`, e.g. under torchrun
    app()
