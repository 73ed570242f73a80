"""`dermvqa train CONFIG [--key=value ...]`."""
from pathlib import Path

import typer


def train(ctx: typer.Context, config: Path = typer.Argument(..., help="recipe YAML (see configs/)")):
    """Train a model from a recipe; extra `--section.key=value` arguments override the recipe."""
    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import run_training

    final = run_training(load_recipe(config, ctx.args))
    typer.echo(f"model saved to {final}")
