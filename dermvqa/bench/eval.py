"""Benchmark-runner speed: questions/s answered one at a time vs in batches, and proof the answers match.

    python -m dermvqa.bench.eval                                   # builds a tiny random LLaVA
    python -m dermvqa.bench.eval --model runs/quickstart/model --bench qa:runs/quickstart/world --n 64

Greedy generation (and, with --likelihood, option scoring) runs over the same N questions at batch 1
and at batch B; the script prints both rates, their ratio, and exits 1 if any answer differs.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from dermvqa.infer.generate import answer_batch, load_model
from dermvqa.infer.likelihood import option_probs

QUESTIONS = ["Is this psoriasis?", "What is the most likely diagnosis?",
             "Which diagnosis fits best? A. eczema B. psoriasis C. melanoma D. nevus",
             "Which of these features is visible? A. scaly B. red C. papule D. nodule"]
OPTIONS = [["yes", "no"], ["eczema", "psoriasis", "melanoma", "nevus"], ["eczema", "psoriasis", "melanoma", "nevus"],
           ["scaly", "red", "papule", "nodule"]]


SHAPES = {  # keyword arguments of build_tiny_llava
    "tiny": {},
    "base": dict(image_size=224, patch_size=16, vision_width=768, vision_layers=12, text_width=1536,
                 text_layers=12),  # CLIP ViT-B/16 tower (196 image tokens) + a 1.5B-wide, 12-layer LLM
}


def build_random_model(out: Path, shape: str) -> Path:
    """Random LLaVA with fan-in scaled weights (gain 2.4), so that greedy replies differ between questions."""
    from dermvqa.model.tiny import build_tiny_llava

    texts = QUESTIONS * 20 + [" ".join(o) for o in OPTIONS] * 20
    model, _ = build_tiny_llava(out, texts, seed=0, **SHAPES[shape])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 2.4 / p.shape[-1] ** 0.5)
    model.save_pretrained(out)
    return out


def questions_from(spec: str | None, n: int):
    """(images, questions, options) from a bench SPEC, or random coloured squares with stock questions."""
    if spec:
        from dermvqa.eval.loaders import load_bench
        from dermvqa.eval.runner import check_images, load_image

        items, _ = check_images(load_bench(spec).items)
        items = items[:n]
        if not items:
            raise SystemExit(f"no items with images in {spec}")
        return [load_image(it) for it in items], [it.question for it in items], [it.options for it in items]
    rng = random.Random(0)
    images = [Image.new("RGB", (96, 96), tuple(rng.randrange(256) for _ in range(3))) for _ in range(n)]
    picks = [rng.randrange(len(QUESTIONS)) for _ in range(n)]
    return images, [QUESTIONS[k] for k in picks], [OPTIONS[k] for k in picks]


def timed(answer, n: int, batch: int):
    """Run answer(start, stop) over n questions in steps of `batch`; return (answers, questions per second)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    answer(0, min(batch, n))                                        # warm-up
    sync()
    t0, out = time.perf_counter(), []
    for s in range(0, n, batch):
        out += answer(s, min(s + batch, n))
    sync()
    return out, n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: build a tiny random LLaVA)")
    ap.add_argument("--bench", help="bench SPEC to take questions from (default: synthetic)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--likelihood", action="store_true", help="also time option-likelihood scoring")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="size of the built random model")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], help="default: bfloat16 on cuda, float32 on cpu")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else build_random_model(Path(tmp), args.shape)
        model, processor = load_model(model_dir, device=args.device,
                                       dtype=getattr(torch, args.dtype) if args.dtype else None)
    images, questions, options = questions_from(args.bench, args.n)
    name = args.model or f"random LLaVA ({args.shape})"
    print(f"model {name} on {model.device} ({model.dtype}), {len(images)} questions, "
          f"max_new_tokens {args.max_new_tokens}")

    def generated(a, b):
        return answer_batch(model, processor, images[a:b], questions[a:b], max_new_tokens=args.max_new_tokens)

    scorable = [k for k, o in enumerate(options) if o]

    def by_likelihood(a, b):
        ks = scorable[a:b]
        probs = option_probs(model, processor, [images[k] for k in ks], [questions[k] for k in ks],
                             [options[k] for k in ks], batch_size=len(ks))
        return [max(range(len(p)), key=p.__getitem__) for p in probs]   # the picked option

    ok, rows = True, [("generate", generated, len(images))]
    if args.likelihood:
        rows.append(("likelihood", by_likelihood, len(scorable)))
    for name, answer, n in rows:
        one, rate1 = timed(answer, n, 1)
        many, rate_n = timed(answer, n, args.batch_size)
        same = sum(a == b for a, b in zip(one, many))
        ok &= same == n
        print(f"{name:10s} batch 1: {rate1:8.2f} q/s   batch {args.batch_size}: {rate_n:8.2f} q/s   "
              f"speed-up x{rate_n / rate1:.2f}   identical answers {same}/{n}   "
              f"distinct answers {len(set(map(str, one)))}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
