"""`run_eval`: load a benchmark, answer every question (and its blind twin), score, write the report.

Answers are appended to answers.jsonl batch by batch; a rerun into the same folder answers only what
is missing. Generation is greedy. In likelihood mode, closed questions with options are answered by
option log-likelihood (giving confidences for calibration); the other questions are still generated.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from atomic_files import write_text_atomic
from dermvqa.eval.answers import AnswerLog
from dermvqa.eval.items import CLOSED, EvalItem
from dermvqa.eval.loaders import load_bench

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


def blank_image(processor):
    """A uniform image in the processor's mean colour: zero after normalisation, so no visual signal."""
    from PIL import Image

    mean = getattr(processor.image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
    return Image.new("RGB", (224, 224), tuple(round(255 * m) for m in mean))


def answer_all(model, processor, todo: list[tuple[EvalItem, bool]], log: AnswerLog, mode: str,
               batch_size: int, max_new_tokens: int, reduce: str) -> int:
    """Answer every (item, blind) pair in batches, appending to the log; returns the number answered."""
    from tqdm import tqdm

    from dermvqa.infer.generate import answer_batch
    from dermvqa.infer.likelihood import option_probs, scored_replies

    blank = blank_image(processor)
    by_option = [mode == "likelihood" and it.answer_type == CLOSED and bool(it.options) for it, _ in todo]
    scored = [pair for pair, s in zip(todo, by_option) if s]
    generated = [pair for pair, s in zip(todo, by_option) if not s]
    with tqdm(total=len(todo), desc="answering", unit="q") as bar:
        for group, by_likelihood in ((scored, True), (generated, False)):
            for start in range(0, len(group), batch_size):
                batch = group[start:start + batch_size]
                images = [blank if b else load_image(it) for it, b in batch]
                questions = [it.question for it, _ in batch]
                if by_likelihood:  # each option scored as the whole reply the model was trained to give
                    replies = scored_replies(model, processor, images, questions, [it.options for it, _ in batch],
                                             [it.family for it, _ in batch], max_new_tokens)
                    probs = option_probs(model, processor, images, questions, replies, batch_size=batch_size,
                                         reduce=reduce)
                    rows = [{"id": it.id, "blind": b, "reply": it.options[k := max(range(len(p)), key=p.__getitem__)],
                             "scored_reply": r[k], "probs": p} for (it, b), p, r in zip(batch, probs, replies)]
                else:
                    replies = answer_batch(model, processor, images, questions, max_new_tokens=max_new_tokens)
                    rows = [{"id": it.id, "blind": b, "reply": r} for (it, b), r in zip(batch, replies)]
                log.append(rows)
                bar.update(len(batch))
    return len(todo)


def run_eval(model_dir, bench_spec: str, out_dir, batch_size: int = 8, limit: int | None = None,
             blind: bool = True, mode: str = "generate", max_new_tokens: int = 64, reduce: str = "sum",
             n_boot: int = 1000, seed: int = 0, gap_min_n: int = 10, device: str | None = None,
             plots: bool = True) -> dict:
    """Evaluate a model folder on a bench SPEC, write the report into out_dir and return metrics.json's dict."""
    from dermvqa.eval.report import write_report
    from dermvqa.eval.summary import build_metrics

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ValueError("batch_size and limit must be positive")
    t0 = time.perf_counter()
    bench = load_bench(bench_spec, limit=limit)
    selected = bench.items[:limit] if limit else bench.items
    items, missing = check_images(selected)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": str(model_dir), "bench": bench_spec, "mode": mode, "max_new_tokens": max_new_tokens,
                "likelihood_reduce": reduce, "decoding": "greedy"}
    if mode == "likelihood":
        settings["likelihood_scoring"] = LIKELIHOOD_SCORING
    log = AnswerLog(out, settings)
    pairs = [(it, b) for b in ([False, True] if blind else [False]) for it in items]
    todo = [(it, b) for it, b in pairs if not log.has(it.id, b)]
    resumed = len(pairs) - len(todo)
    answered, answer_s, device_name, dtype = 0, 0.0, None, None
    if todo:
        from dermvqa.infer.generate import load_model

        model, processor = load_model(model_dir, device=device)
        device_name, dtype = str(model.device), str(model.dtype).replace("torch.", "")
        t1 = time.perf_counter()
        answered = answer_all(model, processor, todo, log, mode, batch_size, max_new_tokens, reduce)
        answer_s = time.perf_counter() - t1
    metrics = build_metrics(bench, items, missing, log, settings, blind, n_boot, seed, gap_min_n)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    info = {"answered_now": answered, "resumed": resumed, "dropped_partial_line": log.dropped_partial_line,
            "answer_seconds": round(answer_s, 3), "total_seconds": round(time.perf_counter() - t0, 3),
            "questions_per_second": round(answered / answer_s, 3) if answer_s else None,
            "batch_size": batch_size, "device": device_name, "dtype": dtype}
    write_text_atomic(out / "run_info.json", json.dumps(info, indent=2) + "\n")
    write_report(out, metrics, info, plots=plots)
    return metrics
