"""`dermvqa train CONFIG [--resume] [--key=value ...]` and `dermvqa export SRC --out DIR`."""
import os
from pathlib import Path
from typing import Annotated

import typer


def train(ctx: typer.Context,
          config: str = typer.Argument(..., help="recipe: a YAML file, or a shipped recipe's name such as tiny_cpu or "
                                                 "qwen2.5-7b/stage2_lora (a path that is no file is looked up among "
                                                 "them, a leading configs/ dropped; train.deepspeed alike)"),
          resume: bool = typer.Option(False, "--resume", help="continue from the newest complete checkpoint "
                                                              "in train.output_dir/checkpoints")):
    """Train a model from a recipe; extra `--section.key=value` arguments override the recipe."""
    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import run_training

    recipe = load_recipe(config, ctx.args)
    if recipe.get("train", {}).get("stage") == "dpo":  # stage 3: preference tuning (dermvqa/train/dpo.py)
        from dermvqa.train.dpo import run_dpo as run_training
    final = run_training(recipe, resume=resume)
    leave_process_group()
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"model saved to {final}")


def leave_process_group() -> None:
    """Wait until rank 0 has written the model, then close the group: a rank that exits with gloo's
    threads still running aborts ("terminate called without an active exception") and fails the launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def export(
    src: Annotated[str, typer.Argument(help="training output: run/model (LoRA adapter or full model) or a "
                                            "run/checkpoints/checkpoint-N folder")],
    out: Annotated[str, typer.Option(help="folder for the merged standard LLaVA model + processor + card")],
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16 weights in the export")] = "bfloat16",
    recipe: Annotated[str, typer.Option(help="recipe.yaml for the model card (found next to SRC by default)")] = "",
):
    """Merge LoRA offline and save a standard LlavaForConditionalGeneration folder with a model card."""
    from dermvqa.model.labels import LABELS_FILE
    from dermvqa.train.export import export as run_export
    from dermvqa.trust.alert import ALERT_FILE
    from dermvqa.trust.ood import META_FILE

    missing = {  # what a report from the export lacks without each file (written by training / alert-fit)
        LABELS_FILE: "`dermvqa report` cannot run on the export",
        "data_summary.json": "reports answer every section, trained or not",
        META_FILE: "reports never abstain on photos unlike the training images",
        ALERT_FILE: "reports carry no malignancy referral (run `dermvqa alert-fit` on the export)",
    }
    path = run_export(src, out, dtype, recipe or None)
    typer.echo(f"exported {src} -> {path} (loads with LlavaForConditionalGeneration + AutoProcessor)")
    carried = {p.name for p in path.glob("dermvqa_*")} | {p.name for p in path.glob("data_summary.json")}
    typer.echo(f"carried for dermvqa report / chat / serve: {', '.join(sorted(carried)) or 'nothing'}")
    for name, loss in missing.items():
        if name not in carried:
            typer.echo(f"note: {src} has no {name}, so {loss}")
