"""The `dermvqa` command: one subcommand per job, each a thin wrapper around a module."""
import typer

app = typer.Typer(help="dermvqa: dermatology VQA data, training, chat, reports and benchmarks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

# Each area registers its commands here; keep one line per command or sub-app.
from dermvqa.commands import quickstart as _quickstart, chat as _chat  # noqa: E402

app.command("quickstart")(_quickstart)
app.command("chat")(_chat)
