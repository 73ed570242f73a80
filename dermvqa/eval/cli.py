"""`dermvqa eval`: run a benchmark (no subcommand) or `dermvqa eval compare A B`."""
from __future__ import annotations

from pathlib import Path

import typer

SPEC_HELP = ("benchmark as released: qa:DIR[:SPLIT] (our QA parquet), mmskin:CSV, dermavqa:JSON[:lang=en|zh|es|all], "
             "slake:JSON[:lang=en|zh|all], vqarad:JSON[:split=test|train|all], "
             "zeroshot:CSV:PAD|HAM|F17K|DAFFODIL (or :classes=FILE), ham10000:DIR[:split=test|val|train|all]; "
             ":root=DATASET_DIR finds the images in the official layout (default: the file's folder)")

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
        device: str = typer.Option(None, "--device", help="cuda / cpu (default: cuda when available)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="no model: print what --bench loads (items per "
                                     "split, answer type and language, skips, images found) and stop")):
    """Run a benchmark; see `compare` for comparing two reports."""
    from dermvqa.eval.benchmarks.common import BenchError

    if ctx.invoked_subcommand is not None:
        return
    if dry_run:
        if bench is None:
            raise typer.BadParameter("missing --bench")
        from dermvqa.eval.dryrun import describe
        from dermvqa.eval.loaders import load_bench

        try:
            typer.echo(describe(load_bench(bench, strict=False)))
        except BenchError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        return
    missing = [n for n, v in (("--model", model), ("--bench", bench), ("--out", out)) if v is None]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)}")
    if mode not in ("generate", "likelihood"):
        raise typer.BadParameter(f"--mode must be generate or likelihood, got {mode!r}")
    from dermvqa.eval.runner import run_eval
    from dermvqa.eval.summary import HEADLINE

    try:
        m = run_eval(model, bench, out, batch_size=batch_size, limit=limit, blind=blind, mode=mode,
                     max_new_tokens=max_new_tokens, device=device)
    except BenchError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
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
