"""`run_eval`: load a benchmark, answer every question (and its blind twin) through a model adapter
(dermvqa.eval.backends), score, write the report; `merge_shards` joins the shards of a data-parallel run.

Answers are appended to answers.jsonl batch by batch; a rerun into the same folder answers only what
is missing or failed (the failed row stays in the file above its new answer); a run refused before it
answered anything leaves no run.json behind. Generation is greedy (an endpoint run with --no-temperature
says it sampled). In likelihood mode, closed questions with options are answered by option log-likelihood
(giving confidences for calibration); the other questions are still generated.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from atomic_files import write_text_atomic
from dermvqa.eval.backends import load_adapter, normalize_spec
from dermvqa.eval.backends.base import FAILURES, ModelAdapter
from dermvqa.eval.answers import AnswerLog
from dermvqa.eval.items import CLOSED, Bench, EvalItem
from dermvqa.eval.loaders import load_bench
from dermvqa.eval.manifest import (ADAPTER_FILE, adapter_manifest, benchmark_files, build_manifest, failure_counts,
                                   row_counts, stored_adapter_manifest)
from dermvqa.eval.shard import SHARD_FILE, read_shards, write_marker
from dermvqa.model.folder import files_sha256
from dermvqa.eval.shard import select as shard_select

GRID_CELL = 256
MODES = ("generate", "likelihood")
LIKELIHOOD_SCORING = ("closed questions with options by option likelihood: yes/no and closed morphology score "
                      "'<the model's own greedy finding>. Answer: <option>.', the reply they were trained to give; "
                      "other closed questions score the option as the whole reply; open questions are generated")


def check_images(items: list[EvalItem]) -> tuple[list[EvalItem], dict[str, str]]:
    """Split items into those whose images all open as images and {id: reason} for the rest."""
    from PIL import Image, UnidentifiedImageError

    present, missing = [], {}
    for it in items:
        for p in it.images:
            if not p.is_file():
                missing[it.id] = f"not found: {p}"
                break
            try:
                with Image.open(p) as im:
                    im.size  # noqa: B018 - reads the header only
            except (UnidentifiedImageError, OSError) as e:
                missing[it.id] = f"unreadable: {p} ({e.__class__.__name__})"
                break
        else:
            present.append(it)
    return present, missing


def load_image(item: EvalItem):
    """The item's image; several images are pasted into one grid of GRID_CELL squares."""
    from PIL import Image

    def open_rgb(p):
        try:
            with Image.open(p) as im:
                return im.convert("RGB")
        except OSError as e:
            raise OSError(f"item {item.id}: cannot decode image {p}: {e}") from e

    ims = [open_rgb(p) for p in item.images]
    if len(ims) == 1:
        return ims[0]
    cols = math.ceil(math.sqrt(len(ims)))
    rows = math.ceil(len(ims) / cols)
    grid = Image.new("RGB", (cols * GRID_CELL, rows * GRID_CELL), (0, 0, 0))
    for k, im in enumerate(ims):
        im.thumbnail((GRID_CELL, GRID_CELL))
        x, y = (k % cols) * GRID_CELL, (k // cols) * GRID_CELL
        grid.paste(im, (x + (GRID_CELL - im.width) // 2, y + (GRID_CELL - im.height) // 2))
    return grid


def answer_groups(todo: list[tuple[EvalItem, bool]], mode: str) -> list[tuple[list, bool]]:
    """The pairs answered by option likelihood, then the generated ones: the order answers.jsonl is written in."""
    by_option = [mode == "likelihood" and it.answer_type == CLOSED and bool(it.options) for it, _ in todo]
    return [([pair for pair, s in zip(todo, by_option) if s], True),
            ([pair for pair, s in zip(todo, by_option) if not s], False)]


def answer_all(adapter: ModelAdapter, todo: list[tuple[EvalItem, bool]], log: AnswerLog, mode: str,
               batch_size: int, max_new_tokens: int, reduce: str) -> int:
    """Answer every (item, blind) pair in batches, appending to the log; returns the number answered."""
    from tqdm import tqdm

    blank = adapter.blank_image()
    with tqdm(total=len(todo), desc="answering", unit="q") as bar:
        for group, by_likelihood in answer_groups(todo, mode):
            for start in range(0, len(group), batch_size):
                batch = group[start:start + batch_size]
                images = [blank if b else load_image(it) for it, b in batch]
                questions = [it.question for it, _ in batch]
                if by_likelihood:  # each option scored as the whole reply the model was trained to give
                    rows = adapter.option_probs(images, questions, [it.options for it, _ in batch],
                                                [it.family for it, _ in batch], max_new_tokens, reduce)
                else:
                    rows = adapter.generate(images, questions, max_new_tokens)
                bad = [r.get("failure") for r in rows if r.get("failure", FAILURES[0]) not in FAILURES]
                if len(rows) != len(batch) or bad:
                    raise RuntimeError(f"{adapter.spec}: {len(rows)} answer rows for {len(batch)} questions"
                                       + (f", failure reasons {bad} not in {FAILURES}" if bad else ""))
                log.append([{"id": it.id, "blind": b, **row} for (it, b), row in zip(batch, rows)])
                bar.update(len(batch))
    return len(todo)


def answered(log: AnswerLog, item_id: str, blind: bool) -> bool:
    """Whether the log holds an answer; a failed row is asked again (the endpoint may have recovered)."""
    row = log.get(item_id, blind)
    return row is not None and "failure" not in row


def failure_examples(items: list[EvalItem], log: AnswerLog, blind: bool) -> dict[str, dict]:
    """{reason: the first failed row's id, run, error and hint}, image answers before blind ones."""
    examples = {}
    for b in ([False, True] if blind else [False]):
        for it in items:
            row = log.get(it.id, b)
            if "failure" in row and row["failure"] not in examples:
                examples[row["failure"]] = {"id": it.id, "run": "blind" if b else "image",
                                            **{k: row[k] for k in ("error", "hint") if k in row}}
    return dict(sorted(examples.items()))


def score_and_write(out: Path, bench: Bench, items: list[EvalItem], missing: dict[str, str], log: AnswerLog,
                    settings: dict, blind: bool, adapter: dict, info: dict, n_boot: int, seed: int,
                    gap_min_n: int, plots: bool, judge: str | None = None,
                    judge_api_key_env: str | None = None) -> dict:
    """metrics.json (with the manifest, the answer failures and the judge's verdicts), run_info.json and report.md."""
    from dermvqa.eval.judge import judge_run
    from dermvqa.eval.report import write_report
    from dermvqa.eval.summary import build_metrics

    verdicts, judged = judge_run(judge, items, log, blind, out, judge_api_key_env) if judge else (None, None)
    metrics = build_metrics(bench, items, missing, log, settings, blind, n_boot, seed, gap_min_n, verdicts)
    metrics["manifest"] = build_manifest(adapter, settings, bench)
    metrics["answer_failures"] = failure_counts(items, log, blind)
    examples, finished = failure_examples(items, log, blind), row_counts(items, log, blind, "finish_reason")
    if examples:
        metrics["answer_failure_examples"] = examples
    if any(finished.values()):
        metrics["finish_reasons"] = finished
    if judged:
        metrics["judge"] = judged
        metrics["judge_failures"] = {run: c["failures"] for run, c in judged.items() if run != "manifest"}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    write_text_atomic(out / "run_info.json", json.dumps(info, indent=2) + "\n")
    write_report(out, metrics, info, plots=plots)
    return metrics


def run_eval(model, bench_spec: str, out_dir, batch_size: int = 8, limit: int | None = None,
             blind: bool = True, mode: str = "generate", max_new_tokens: int = 64, reduce: str = "sum",
             n_boot: int = 1000, seed: int = 0, gap_min_n: int = 10, device: str | None = None,
             plots: bool = True, shard: tuple[int, int] | None = None, adapter_options: dict | None = None,
             judge: str | None = None, judge_api_key_env: str | None = None) -> dict:
    """Evaluate a model SPEC (llava:DIR, hf:ID_OR_DIR, openai:MODEL@URL, or a folder), or an adapter the caller
    has loaded (and keeps: it is not closed here), on a bench SPEC, write the report into out_dir and return
    metrics.json's dict. With `shard` (I, N) only that shard's items are answered
    (see dermvqa.eval.shard) and the run's info is returned; `merge_shards` scores the shards together.
    `judge` (openai:MODEL@URL) scores the open answers with dermvqa.eval.judge (not with `shard`)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ValueError("batch_size and limit must be positive")
    if judge and shard:
        raise ValueError("--judge is not available with --shard: judge a one-process run")
    t0 = time.perf_counter()
    spec = model.spec if isinstance(model, ModelAdapter) else normalize_spec(model)
    bench = load_bench(bench_spec, limit=limit)
    selected = bench.items[:limit] if limit else bench.items
    items, missing = check_images(shard_select(selected, shard) if shard else selected)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampled = (adapter_options or {}).get("send_temperature") is False
    settings = {"model": spec, "bench": bench_spec, "mode": mode, "max_new_tokens": max_new_tokens,
                "likelihood_reduce": reduce,
                "decoding": "sampled (the endpoint's default temperature)" if sampled else "greedy"}
    if mode == "likelihood":
        settings["likelihood_scoring"] = LIKELIHOOD_SCORING
    if shard:
        write_marker(out, shard, {"limit": limit, "blind": blind, "n_boot": n_boot, "seed": seed,
                                  "gap_min_n": gap_min_n, "benchmark_sha256": files_sha256(benchmark_files(bench_spec))})
    elif (out / SHARD_FILE).exists():
        raise ValueError(f"{out} holds a shard (--shard); merge it with `dermvqa eval merge` or use a new --out folder")
    fresh = [p for p in (out / "run.json", out / ADAPTER_FILE) if not p.exists()]
    log = AnswerLog(out, settings)
    pairs = [(it, b) for b in ([False, True] if blind else [False]) for it in items]
    todo = [(it, b) for it, b in pairs if not answered(log, it.id, b)]
    retried = sum(1 for it, b in todo if log.has(it.id, b))
    resumed = len(pairs) - len(todo)
    n_answered, answer_s, device_name, dtype, options = 0, 0.0, None, None, {}
    if todo or not (out / ADAPTER_FILE).exists():  # a shard with no items to answer still records its model
        adapter = None
        try:
            adapter = model if isinstance(model, ModelAdapter) else load_adapter(
                spec, device=device, batch_size=batch_size, cache_dir=out, **(adapter_options or {}))
            if mode == "likelihood" and not adapter.supports_likelihood:
                raise ValueError(f"--mode likelihood: the {adapter.kind}: backend gives no option likelihood")
            manifest = adapter_manifest(out, adapter)
            device_name, dtype = getattr(adapter, "device", None), getattr(adapter, "dtype", None)
            options = adapter.run_options()
            t1 = time.perf_counter()
            n_answered = answer_all(adapter, todo, log, mode, batch_size, max_new_tokens, reduce)
            answer_s = time.perf_counter() - t1
        except BaseException:
            if not log.rows:  # refused before any answer: no run.json left to refuse the next run's settings
                for p in fresh:
                    p.unlink(missing_ok=True)
            raise
        finally:
            if adapter is not None and adapter is not model:
                adapter.close()
    else:
        manifest = stored_adapter_manifest(out)
    info = {"answered_now": n_answered, "resumed": resumed, "retried_failures": retried,
            "dropped_partial_line": log.dropped_partial_line,
            "answer_seconds": round(answer_s, 3), "total_seconds": round(time.perf_counter() - t0, 3),
            "questions_per_second": round(n_answered / answer_s, 3) if answer_s else None,
            "batch_size": batch_size, "device": device_name, "dtype": dtype, "backend_options": options}
    if shard:
        write_text_atomic(out / "run_info.json", json.dumps(info, indent=2) + "\n")
        return info
    return score_and_write(out, bench, items, missing, log, settings, blind, manifest, info, n_boot, seed, gap_min_n,
                           plots, judge, judge_api_key_env)


def merge_shards(out_dir, shard_dirs: list, plots: bool = True) -> dict:
    """Join the shard folders of one run into out_dir: answers.jsonl in the one-process run's order, and its
    metrics.json and report.md. Refuses shards of other settings, a changed benchmark, and any (item, blind)
    pair answered by no shard or by two."""
    t0 = time.perf_counter()
    shards = read_shards([Path(d) for d in shard_dirs])
    _, marker, settings = shards[0]
    out = Path(out_dir)
    if (out / "answers.jsonl").exists():
        raise ValueError(f"{out} already holds answers.jsonl; merge into a new --out folder")
    manifests = [stored_adapter_manifest(d) for d, _, _ in shards]
    if any(m != manifests[0] for m in manifests):
        raise ValueError("merge: the shards were answered by different models (adapter_manifest.json differ)")
    spec = settings["bench"]
    if files_sha256(benchmark_files(spec)) != marker["benchmark_sha256"]:
        raise ValueError(f"merge: the benchmark files of {spec!r} changed since the shards were answered")
    bench = load_bench(spec, limit=marker["limit"])
    items, missing = check_images(bench.items[:marker["limit"]] if marker["limit"] else bench.items)
    pairs = [(it, b) for b in ([False, True] if marker["blind"] else [False]) for it in items]
    logs = [AnswerLog(d, settings) for d, _, _ in shards]
    wanted = {(it.id, b) for it, b in pairs}
    for (d, _, _), shard_log in zip(shards, logs):
        extra = sorted(set(shard_log.rows) - wanted)
        if extra:
            raise ValueError(f"merge: {d} holds {len(extra)} answers outside the selection, e.g. {extra[0]}")
    lines = []
    for group, _ in answer_groups(pairs, settings["mode"]):
        for it, b in group:
            found = [shard_log.get(it.id, b) for shard_log in logs if shard_log.has(it.id, b)]
            if len(found) != 1:
                raise ValueError(f"merge: item {it.id} ({'blind' if b else 'image'}) answered by {len(found)} "
                                 f"shards, expected 1")
            lines.append(json.dumps(found[0], ensure_ascii=False) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "answers.jsonl", "".join(lines))
    write_text_atomic(out / ADAPTER_FILE, json.dumps(manifests[0], indent=2, sort_keys=True) + "\n")
    log = AnswerLog(out, settings)
    infos = [json.loads((d / "run_info.json").read_text()) for d, _, _ in shards]
    info = {"answered_now": 0, "resumed": len(lines), "dropped_partial_line": False, "merged_shards": len(shards),
            "answer_seconds": round(sum(i["answer_seconds"] for i in infos), 3),
            "total_seconds": round(time.perf_counter() - t0, 3), "questions_per_second": None,
            "batch_size": infos[0]["batch_size"], "device": infos[0]["device"], "dtype": infos[0]["dtype"]}
    return score_and_write(out, bench, items, missing, log, settings, marker["blind"], manifests[0], info,
                           marker["n_boot"], marker["seed"], marker["gap_min_n"], plots)
