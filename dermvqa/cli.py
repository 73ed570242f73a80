"""The `dermvqa` command: one subcommand per job, each a thin wrapper around a module."""
import typer

from dermvqa.quickstart import quickstart
from dermvqa.train.cli import export, train
from dermvqa.model import commands as model_commands
from dermvqa.eval.cli import eval_app
from data_gen.cli import data_app
from dermvqa.serve import cli as serve_cli

app = typer.Typer(help="dermvqa: dermatology VQA data, training, chat, reports and benchmarks.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

# One registration line per command or sub-app; command bodies live in their own modules.
app.command("quickstart")(quickstart)
app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train)
app.command("convert-dermlip")(model_commands.convert_dermlip)
app.command("build")(model_commands.build)
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.command("chat")(serve_cli.chat)
app.command("report")(serve_cli.report)
app.add_typer(serve_cli.serve_app, name="serve")
app.command("export")(export)

if __name__ == "__main__":  # `python -m dermvqa.cli`, e.g. under torchrun
    app()
