"""Training-step benchmark: plain transformers+peft, DeepSpeed ZeRO-2, our step and its kernel candidates, QLoRA.

A random Qwen2.5-7B-shaped LLM (bf16, built from its config) behind a CLIP ViT-B/16 tower at 224
px (196 image tokens), LoRA r 128 on every LLM Linear, projector trainable. Every case trains on
the same batches, whose lengths follow synthesized Derm1M QA; tokens/s counts real (non-pad)
tokens only. Rows print as each case ends; one table closes the run. `--tiny` runs the same
logic on the CPU with tiny shapes (tests/train/test_gpu_bench.py).
Usage: python -m dermvqa.bench.gpu_bench_train [--tiny] [--budget-s 330] [--batch N] [--skip CASE..] [--profile CASE..]
"""
from __future__ import annotations

import argparse
import gc
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from dermvqa.bench.gpu_bench_cases import (load_4bit, ours_case, plain_case, qlora_naive_case, remember_projector,
                                           zero2_case)
from dermvqa.bench.gpu_bench_timing import StepProfiler
from dermvqa.train.kernels import flex_missing, liger_missing

QWEN7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
              num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
              tie_word_embeddings=False)
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               image_size=224, patch_size=16, hidden_act="gelu", projection_dim=512)
TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024, tie_word_embeddings=False)
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, hidden_act="gelu", projection_dim=16)
BASELINES = ("plain+ckpt", "plain", "zero2+ckpt", "zero2")
PROFILED = ("zero2", "ours", "ours (liger)", "ours (flex)", "ours (no DeepSpeed)", "qlora ours", "qlora ours (ZeRO-2)")
FLEX, LIGER = "train.attn_implementation=flex_attention", "train.liger=true"
GIB = 2 ** 30


def synth_samples(n, rng, n_image, vocab, image_id, scale=1.0, target_len=None, max_len=600):
    """(input_ids, labels) shaped like our Derm1M QA: template + image + question, then the answer.

    Families: closed (yes/no, multiple choice: long question with options, 2-8 answer tokens),
    open (diagnosis, location: 8-40), report (description: 150-350). Totals clip to `max_len`.
    """
    out = []
    while len(out) < n:
        q = rng.randint(20, 120)
        family = rng.random()
        a = rng.randint(2, 8) if family < 0.35 else rng.randint(8, 40) if family < 0.7 else rng.randint(150, 350)
        if target_len is not None:
            a = max(2, target_len - n_image - 30 - q)
        q, a = max(2, int(q * scale)), max(2, int(a * scale))
        head, tail = int(12 * scale) + 1, int(18 * scale) + 1
        prompt = [rng.randrange(10, vocab - 10) for _ in range(head)] + [image_id] * n_image + \
                 [rng.randrange(10, vocab - 10) for _ in range(q + tail)]
        answer = [rng.randrange(10, vocab - 10) for _ in range(a)]
        ids = (prompt + answer)[:max_len]
        labels = [-100] * len(prompt) + ids[len(prompt):]
        out.append((ids, labels))
    return out


def build_model(args, device, dtype):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    text = Qwen2Config(**(TINY_LLM if args.tiny else QWEN7B))
    vision = CLIPVisionConfig(**(TINY_VIT if args.tiny else VIT_B16))
    n_image = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=text.vocab_size - 1,
                         image_seq_length=n_image, vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    return remember_projector(model).train(), n_image


def make_batches(args, n_image, vocab, image_id, image_size, batch, target_len=None, seed=0):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    scale = 0.05 if args.tiny else 1.0
    batches = []
    for _ in range(args.warmup + args.steps):
        samples = synth_samples(batch, rng, n_image, vocab, image_id, scale, target_len,
                                max_len=n_image + 40 if args.tiny else 600)
        batches.append([{"input_ids": ids, "labels": lab,
                         "pixel_values": torch.randn(3, image_size, image_size, generator=g)} for ids, lab in samples])
    return batches

def _allocated(device):
    return torch.cuda.memory_allocated() / GIB if device == "cuda" else float("nan")


def _reset_peak(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device):
    return torch.cuda.max_memory_allocated() / GIB if device == "cuda" else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (tests the logic)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting cases after this many seconds")
    ap.add_argument("--case-s", type=float, default=30.0, help="measuring time per case")
    ap.add_argument("--batch", type=int, default=0, help="examples per step (0: 16 on >100 GiB GPUs, else 8)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--qlora-batch", type=int, default=4)
    ap.add_argument("--qlora-reserve-s", type=float, default=130.0,
                    help="seconds of the budget kept for saving, 4-bit loading and the QLoRA cases")
    ap.add_argument("--skip", nargs="*", default=[], help="case names to skip")
    ap.add_argument("--profile", nargs="*", default=list(PROFILED),
                    help="cases whose last warmup step prints its top kernels")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    start = time.perf_counter()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # as shipped; fp32 LoRA matmuls pay for it
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    mem = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 0
    batch = args.batch or (16 if mem > 100 else 8) if device == "cuda" else (args.batch or 4)
    model, n_image = build_model(args, device, dtype)
    vcfg, tcfg = model.config.vision_config, model.config.text_config
    batches = make_batches(args, n_image, tcfg.vocab_size, model.config.image_token_id, vcfg.image_size, batch)
    lengths = [len(e["input_ids"]) for b in batches for e in b]
    print(f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'} ({mem:.0f} GiB), "
          f"torch {torch.__version__}; LLM {tcfg.num_hidden_layers}x{tcfg.hidden_size}, vocab {tcfg.vocab_size}; "
          f"{n_image} image tokens; batch {batch}; lengths mean {sum(lengths) / len(lengths):.0f} "
          f"min {min(lengths)} max {max(lengths)}; build {time.perf_counter() - start:.0f}s", flush=True)
    rows = []

    def run(name, fn, *fargs, reserve=0.0, unavailable=None, **fkw):
        """One case; it is not started when `unavailable` says why it cannot run here or when fewer than 5 s
        (+ `reserve` kept for later cases) are left."""
        if name in args.skip:
            return
        if unavailable:
            rows.append((name, None, None, None, f"skipped: {unavailable}"))
            print(f"{name:<22} skipped: {unavailable}", flush=True)
            return
        left = args.budget_s - reserve - (time.perf_counter() - start)
        if left < 5:
            rows.append((name, None, None, None, "skipped: time budget spent"))
            print(f"{name:<22} skipped: time budget spent", flush=True)
            return
        gc.collect()  # the previous case's engine/optimizer may sit in reference cycles
        if device == "cuda":
            torch.cuda.empty_cache()
        _reset_peak(device)
        try:
            deadline = time.perf_counter() + min(args.case_s, left)
            (tokens, seconds, steps), note = fn(*fargs, deadline=deadline,
                                                profiler=StepProfiler(name, device, name in args.profile), **fkw)
            row = (name, tokens / seconds, _peak(device), steps, note)
        except Exception as e:  # one failing case must not hide the others
            row = (name, None, _peak(device), None, f"error: {type(e).__name__}: {str(e).splitlines()[0][:150]}")
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        tps = f"{row[1]:,.0f} tok/s" if row[1] else "-"
        peak = f"{row[2]:.1f} GiB" if row[2] == row[2] else "-"
        print(f"{name:<22} {tps:>14}  peak {peak}  steps {row[3]}  {row[4]}  "
              f"[{time.perf_counter() - start:.0f}s]", flush=True)

    keep, common = args.qlora_reserve_s, (model, batches, args, device, dtype)
    run("plain+ckpt", plain_case, *common, ckpt=True, reserve=keep)
    run("zero2", zero2_case, *common, ckpt=False, reserve=keep)
    run("ours", ours_case, *common, fraction=0.0, reserve=keep)
    if rows and rows[-1][0] == "ours" and rows[-1][4].startswith("error"):  # e.g. out of memory: checkpoint half
        run("ours (ckpt 1/2)", ours_case, *common, fraction=0.5, reserve=keep)
    run("zero2+ckpt", zero2_case, *common, ckpt=True, reserve=keep)
    run("plain", plain_case, *common, ckpt=False, reserve=keep)
    # candidates (issue 17); flex compiles its kernels in the first steps, hence two more untimed ones
    on_cpu = "--tiny runs on the CPU" if device == "cpu" else None
    no_flex, no_liger = flex_missing() or on_cpu, liger_missing() or on_cpu
    run("ours (liger)", ours_case, *common, fraction=0.0, overrides=[LIGER], reserve=keep, unavailable=no_liger)
    run("ours (flex)", ours_case, *common, fraction=0.0, overrides=[FLEX], warmup=args.warmup + 2, reserve=keep,
        unavailable=no_flex)
    run("ours (flex+liger)", ours_case, *common, fraction=0.0, overrides=[FLEX, LIGER], warmup=args.warmup + 2,
        reserve=keep, unavailable=no_flex or no_liger)
    # diagnostics, after every baseline the ratio needs
    run("ours (no DeepSpeed)", ours_case, *common, fraction=0.0, deepspeed=False, reserve=keep)
    run("plain+ckpt+autocast", plain_case, *common, ckpt=True, autocast=True, reserve=keep)
    run("ours (ckpt all)", ours_case, *common, fraction=1.0, reserve=keep)

    qbatches = make_batches(args, n_image, tcfg.vocab_size, model.config.image_token_id, vcfg.image_size,
                            args.qlora_batch, target_len=450, seed=1)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 40 * GIB else None
    folder = Path(tempfile.mkdtemp(prefix="dermvqa_bench_", dir=shm))
    try:
        if all(f"qlora {k}" in args.skip for k in ("naive", "naive+train", "ours")):
            return rows
        t0 = time.perf_counter()
        model.save_pretrained(folder)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        t1 = time.perf_counter()
        qmodel = load_4bit(folder, device)
        print(f"saved the bf16 model in {t1 - t0:.0f}s, loaded it in 4-bit in {time.perf_counter() - t1:.0f}s "
              f"({_allocated(device):.1f} GiB)", flush=True)
        qcommon = (qmodel, qbatches, args, device, qmodel.dtype)
        run("qlora naive", qlora_naive_case, *qcommon, train_mode=False)
        run("qlora naive+train", qlora_naive_case, *qcommon, train_mode=True)
        run("qlora ours", ours_case, *qcommon, fraction=1.0, deepspeed=False, recipe_name="stage2_qlora")
        run("qlora ours (ZeRO-2)", ours_case, *qcommon, fraction=1.0, recipe_name="stage2_qlora")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        print_table(rows, batch, args.qlora_batch)
    return rows


def print_table(rows, batch, qbatch):
    base = [r[1] for r in rows if r[0] in BASELINES and r[1]]
    best = max(base) if base else None
    print("\n| case | tokens/s | x best baseline | peak GiB | note |\n|---|---|---|---|---|")
    for name, tps, peak, steps, note in rows:
        ratio = f"{tps / best:.2f}" if tps and best and not name.startswith("qlora") else "-"
        shown = f"{tps:,.0f}" if tps else "-"
        peak_s = f"{peak:.1f}" if peak == peak and peak is not None else "-"
        print(f"| {name} | {shown} | {ratio} | {peak_s} | {note} |")
    print(f"\nbf16 cases: batch {batch}, QLoRA: batch {qbatch} x ~450 tokens; best baseline = "
          f"max over {', '.join(BASELINES)} = {best and f'{best:,.0f}'} tok/s (real tokens only)")


if __name__ == "__main__":
    main()
