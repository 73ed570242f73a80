"""`dermvqa eval`: run a benchmark (no subcommand) or `dermvqa eval compare A B`."""
from __future__ import annotations

from pathlib import Path

import typer

SPEC_HELP = ("benchmark: qa:DIR[:SPLIT] (our QA parquet, split default test), mmskin:CSV, dermavqa:JSON, "
             "slake:JSON, zeroshot:CSV:LIST (PAD, HAM, F17K, DAFFODIL); extras as :key=value, "
             "e.g. :root=IMAGE_DIR, :lang=en")

eval_app = typer.Typer(
    help="Benchmark a model: `dermvqa eval --model DIR --bench SPEC --out DIR` writes metrics.json, "
         "answers.jsonl, report.md and plots (resumable); `dermvqa eval compare A B` compares two runs.",
    invoke_without_command=True, no_args_is_help=True)


@eval_app.callback()
def run(ctx: typer.Context,
        model: Path = typer.Option(None, "--model", help="exported LLaVA folder or base + LoRA adapter folder"),
        bench: str = typer.Option(None, "--bench", help=SPEC_HELP),
        out: Path = typer.Option(None, "--out", help="report folder (a rerun into it resumes)"),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        limit: int = typer.Option(None, "--limit", min=1, help="only the first N questions"),
        blind: bool = typer.Option(True, "--blind/--no-blind", help="also answer with a blank image"),
        mode: str = typer.Option("generate", "--mode", help="generate | likelihood (closed questions by "
                                 "option log-likelihood, gives calibration)"),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
        device: str = typer.Option(None, "--device", help="cuda / cpu (default: cuda when available)")):
    """Run a benchmark; see `compare` for comparing two reports."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [n for n, v in (("--model", model), ("--bench", bench), ("--out", out)) if v is None]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)}")
    if mode not in ("generate", "likelihood"):
        raise typer.BadParameter(f"--mode must be generate or likelihood, got {mode!r}")
    from dermvqa.eval.runner import run_eval
    from dermvqa.eval.summary import HEADLINE

    m = run_eval(model, bench, out, batch_size=batch_size, limit=limit, blind=blind, mode=mode,
                 max_new_tokens=max_new_tokens, device=device)
    b = m["benchmark"]
    typer.echo(f"scored {b['items_scored']} of {b['items_selected']} questions "
               f"({b['missing_images']['count']} with missing images)")
    for name in HEADLINE:
        s, bl = m["overall"]["image"].get(name), m["overall"].get("blind", {}).get(name)
        if s:
            blind_txt = f"   blind {bl['value']:.3f}" if bl else ""
            typer.echo(f"{name:12s} {s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] n={s['n']}{blind_txt}")
    typer.echo(f"report: {Path(out) / 'report.md'}")


@eval_app.command("compare")
def compare_cmd(a: Path = typer.Argument(..., help="report folder (or metrics.json) A"),
                b: Path = typer.Argument(..., help="report folder (or metrics.json) B")):
    """Side-by-side table of two reports: B − A and whether the 95% intervals separate them."""
    from dermvqa.eval.compare import compare

    typer.echo(compare(a, b))
