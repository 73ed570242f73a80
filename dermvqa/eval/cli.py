"""`dermvqa eval`: run a benchmark (no subcommand), `dermvqa eval merge` shards, or `dermvqa eval compare A B`.

A run prints its answer failures (counts by reason, the first error of each reason with a hint) and its
answers cut at the token limit, and exits 1 when more than --max-failure-share of the image or the blind
answers failed (unless --allow-failures); usage errors exit 2.
"""
from __future__ import annotations

import os
from pathlib import Path

import typer

from chat_endpoint import options as endpoint_options
from chat_endpoint.endpoint import Endpoint

MODEL_HELP = ("llava:DIR (a dermvqa LLaVA folder, or base + LoRA adapter folder; a bare folder means this), "
              "hf:ID_OR_DIR (a transformers image-text-to-text model: hub id or folder), "
              "openai:MODEL@URL (an OpenAI-compatible chat endpoint, e.g. openai:my-model@http://127.0.0.1:8000/v1)")
SPEC_HELP = ("benchmark as released: qa:DIR[:SPLIT] (our QA parquet), mmskin:CSV, dermavqa:JSON[:lang=en|zh|es|all], "
             "slake:JSON[:lang=en|zh|all], vqarad:JSON[:split=test|train|all], "
             "zeroshot:CSV:PAD|HAM|F17K|DAFFODIL (or :classes=FILE), ham10000:DIR[:split=test|val|train|all]; "
             ":root=DATASET_DIR finds the images in the official layout (default: the file's folder)")

def parse_rgb(text: str) -> tuple[int, int, int]:
    """`R,G,B` (each 0-255) -> a tuple; anything else is an error naming --blank-rgb."""
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        raise ValueError(f"--blank-rgb {text!r}: expected R,G,B with each value 0-255, e.g. 122,116,104")
    return tuple(int(p) for p in parts)


eval_app = typer.Typer(
    help="Benchmark a model: `dermvqa eval --model DIR --bench SPEC --out DIR` writes metrics.json, "
         "answers.jsonl, report.md and plots (resumable); `dermvqa eval merge` joins --shard runs; "
         "`dermvqa eval compare A B` compares two runs.",
    invoke_without_command=True, no_args_is_help=True)


@eval_app.callback()
def run(ctx: typer.Context,
        model: str = typer.Option(None, "--model", help=MODEL_HELP),
        bench: str = typer.Option(None, "--bench", help=SPEC_HELP),
        out: Path = typer.Option(None, "--out", help="report folder (a rerun into it resumes)"),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        limit: int = typer.Option(None, "--limit", min=1, help="only the first N questions"),
        blind: bool = typer.Option(True, "--blind/--no-blind", help="also answer with a blank image"),
        mode: str = typer.Option("generate", "--mode", help="generate | likelihood (closed questions by "
                                 "option log-likelihood, gives calibration)"),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
        device: str = typer.Option(None, "--device", help="cuda / cpu (default: cuda when available)"),
        api_key_env: str = endpoint_options.api_key_env_option("openai"),
        concurrency: int = typer.Option(None, "--concurrency", min=1, help="openai: requests in flight at most"),
        blank_rgb: str = typer.Option(None, "--blank-rgb", help="openai: R,G,B of the blind control's image (the "
                                      "served model's normalisation mean; default: what the endpoint lists, as "
                                      "dermvqa serve api does, else 128,128,128)"),
        timeout: float = endpoint_options.timeout_option("openai", Endpoint.timeout_s),
        retries: int = endpoint_options.retries_option("openai", Endpoint.retries),
        max_tokens_param: str = endpoint_options.max_tokens_param_option("openai", "--max-new-tokens"),
        no_temperature: bool = endpoint_options.no_temperature_option("openai"),
        extra_body: str = endpoint_options.extra_body_option("openai"),
        max_failure_share: float = typer.Option(0.5, "--max-failure-share", min=0.0, max=1.0, help="exit 1 when "
                                                "more than this share of the image or the blind answers failed"),
        allow_failures: bool = typer.Option(False, "--allow-failures", help="exit 0 however many answers failed "
                                            "(they still score as wrong)"),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="hf: run the model repository's "
                                               "own Python code (only for repositories you trust)"),
        allow_untested: bool = typer.Option(False, "--allow-untested-family", help="hf: run a model family "
                                            "dermvqa has not tested (the report says so)"),
        judge: str = typer.Option(None, "--judge", help="openai:MODEL@URL: an LLM judge scores the open answers "
                                  "against the reference with the repo's rubric (judge_accuracy; cached)"),
        judge_api_key_env: str = typer.Option(None, "--judge-api-key-env", help="the environment variable holding "
                                              "the judge endpoint's API key"),
        shard: str = typer.Option(None, "--shard", help="I/N: answer only the items at positions pos % N == I-1 "
                                  "(then `dermvqa eval merge`); auto: I/N from RANK/WORLD_SIZE under torchrun, "
                                  "into OUT/shard-I-of-N"),
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
    from dermvqa.eval.backends import split_spec
    from dermvqa.eval.runner import run_eval
    from dermvqa.eval.shard import parse_shard

    try:
        kind, _ = split_spec(model)
        for flag, value, owner in (("--api-key-env", api_key_env, "openai"), ("--concurrency", concurrency, "openai"),
                                   ("--blank-rgb", blank_rgb, "openai"), ("--timeout", timeout, "openai"),
                                   ("--retries", retries is not None, "openai"),
                                   ("--max-tokens-param", max_tokens_param, "openai"),
                                   ("--no-temperature", no_temperature, "openai"),
                                   ("--extra-body", extra_body, "openai"),
                                   ("--trust-remote-code", trust_remote_code, "hf"),
                                   ("--allow-untested-family", allow_untested, "hf")):
            if value and kind != owner:
                raise ValueError(f"{flag} applies to --model {owner}:..., not to {kind}:")
        shard_of = parse_shard(shard) if shard else None
        if shard == "auto":
            out = out / f"shard-{shard_of[0]}-of-{shard_of[1]}"
            if device is None and "LOCAL_RANK" in os.environ:
                import torch

                device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else None
        m = run_eval(model, bench, out, batch_size=batch_size, limit=limit, blind=blind, mode=mode,
                     max_new_tokens=max_new_tokens, device=device, shard=shard_of,
                     adapter_options={"api_key_env": api_key_env, "concurrency": concurrency,
                                      "blank_rgb": parse_rgb(blank_rgb) if blank_rgb else None,
                                      "timeout": timeout, "max_retries": retries, "max_tokens_param": max_tokens_param,
                                      "send_temperature": False if no_temperature else None,
                                      "extra_body": (endpoint_options.parse_extra_body(extra_body) if extra_body
                                                     else None),
                                      "trust_remote_code": trust_remote_code or None,
                                      "allow_untested": allow_untested or None},
                     judge=judge, judge_api_key_env=judge_api_key_env)
    except (BenchError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if shard_of:
        typer.echo(f"shard {shard_of[0]}/{shard_of[1]}: answered {m['answered_now']}, resumed {m['resumed']}; "
                   f"join the shards with `dermvqa eval merge --out DIR SHARD_DIR...` ({out})")
        return
    print_summary(m, out)
    too_many = too_many_failures(m, max_failure_share)
    if too_many and not allow_failures:
        typer.echo(f"error: {too_many}; the scores above count them as wrong. Fix the cause and rerun into the same "
                   "--out (only the failed answers are asked again), or pass --allow-failures", err=True)
        raise typer.Exit(1)


def failure_lines(m: dict) -> list[str]:
    """The answers the backend failed to give, per run by reason, then the first of each reason and cut answers."""
    from dermvqa.eval.report import failure_detail_lines

    n = m["benchmark"]["items_scored"]
    runs = [f"{run} {sum(c.values())} of {n} (" + ", ".join(f"{reason} {k}" for reason, k in c.items()) + ")"
            for run, c in m.get("answer_failures", {}).items() if c]
    return (["answer failures (scored wrong): " + "; ".join(runs)] if runs else []) + failure_detail_lines(m)


def too_many_failures(m: dict, max_share: float) -> str | None:
    """What failed beyond --max-failure-share, or None."""
    n = m["benchmark"]["items_scored"]
    over = [f"{sum(c.values())} of {n} {run} answers" for run, c in m.get("answer_failures", {}).items()
            if n and sum(c.values()) / n > max_share]
    return f"{' and '.join(over)} failed (more than --max-failure-share {max_share:g})" if over else None


def print_summary(m: dict, out: Path) -> None:
    from dermvqa.eval.summary import HEADLINE

    b = m["benchmark"]
    typer.echo(f"scored {b['items_scored']} of {b['items_selected']} questions "
               f"({b['missing_images']['count']} with missing images)")
    for line in failure_lines(m):
        typer.echo(line)
    for name in HEADLINE:
        s, bl = m["overall"]["image"].get(name), m["overall"].get("blind", {}).get(name)
        if s:
            blind_txt = f"   blind {bl['value']:.3f}" if bl else ""
            typer.echo(f"{name:12s} {s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] n={s['n']}{blind_txt}")
    typer.echo(f"report: {Path(out) / 'report.md'}")


@eval_app.command("merge")
def merge_cmd(out: Path = typer.Option(..., "--out", help="folder for the merged report (new)"),
              shards: list[Path] = typer.Argument(..., help="the shard folders of one run (1..N)")):
    """Join `--shard I/N` runs: answers.jsonl, metrics.json and report.md as the one-process run writes them."""
    from dermvqa.eval.benchmarks.common import BenchError
    from dermvqa.eval.runner import merge_shards

    try:
        m = merge_shards(out, shards)
    except (BenchError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    print_summary(m, out)


@eval_app.command("compare")
def compare_cmd(runs: list[Path] = typer.Argument(..., help="two or more `dermvqa eval --out` folders of one "
                                                           "benchmark"),
                baseline: Path = typer.Option(None, "--baseline", help="the run the others are tested against "
                                              "(one of RUNS; default the first)"),
                out: Path = typer.Option(None, "--out", help="also write compare.md, compare.json and "
                                         "compare_forest.png here")):
    """Leaderboard of k runs (95% intervals, blind control beside each) and paired tests against the baseline on
    the items they share: bootstrap interval of the difference, McNemar's exact test for closed accuracy,
    overall and per Fitzpatrick type, source and family. Refuses runs of different benchmark files."""
    from dermvqa.eval.compare import compare

    first = runs[0] if baseline is None else next((r for r in runs if r.resolve() == baseline.resolve()), None)
    if first is None:  # errors here and in compare() become one `error:` line, exit 2, in dermvqa.cli
        raise ValueError(f"--baseline {baseline} is not one of the runs ({', '.join(map(str, runs))})")
    typer.echo(compare([first, *(r for r in runs if r != first)], out))
