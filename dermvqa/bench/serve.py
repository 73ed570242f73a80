"""Bounded load test of the OpenAI-compatible API on 127.0.0.1: batched serving against one-at-a-time serving.

The same loaded model is served twice in this process, first with request batching (--max-batch) and then
strictly one request at a time (max_batch=1). Each time, C concurrent clients send R chat completions each
(a lesion photo as a data: URI plus one of a few questions). Reports per mode: errors, p50/p95 latency,
requests/s, generated tokens/s and the mean batch size, then the batched/one-at-a-time throughput ratio.

    python -m dermvqa.bench.serve --model runs/quickstart/train/model --clients 8 --requests 20
    python -m dermvqa.bench.serve            # no --model: a tiny random-weight model (plumbing check only)
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from dermvqa.bench import SHARED_DATA

PAD_PHOTO = SHARED_DATA / "pad-ufes-20" / "examples" / "PAT_8_15_820.png"
QUESTIONS = ["What is the most likely diagnosis for this lesion?", "Which body site is affected?",
             "What visual features does this lesion show?", "Is this psoriasis?"]


def tiny_model(out: Path) -> Path:
    from dermvqa.model.tiny import build_tiny_llava

    texts = [f"{q} basal cell carcinoma melanoma nevus psoriasis eczema scale plaque papule" for q in QUESTIONS] * 30
    build_tiny_llava(out, texts, seed=0, vision_width=64, vision_layers=2, text_width=64, text_layers=2,
                     vocab_size=400)
    return out


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def load(url: str, model_name: str, image_uri: str, clients: int, requests: int, max_tokens: int) -> dict:
    """C clients x R sequential requests each; returns latencies and counts."""
    latencies, tokens, errors = [], [], []
    lock = threading.Lock()
    bar = tqdm(total=clients * requests, desc="requests", leave=False)

    def client(k: int):
        with httpx.Client(base_url=url, timeout=600) as http:
            for i in range(requests):
                body = {"model": model_name, "max_tokens": max_tokens, "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": image_uri}},
                    {"type": "text", "text": QUESTIONS[(k + i) % len(QUESTIONS)]}]}]}
                t = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body)
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                        tokens.append(r.json()["usage"]["completion_tokens"])
                    else:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                    bar.update()

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    bar.close()
    return {"wall_s": wall, "ok": len(latencies), "errors": len(errors), "error_samples": errors[:3],
            "p50_s": percentile(latencies, 50) if latencies else None,
            "p95_s": percentile(latencies, 95) if latencies else None,
            "requests_per_s": len(latencies) / wall, "tokens_per_s": sum(tokens) / wall}


def serve_and_load(model, processor, name: str, max_batch: int, args, image_uri: str) -> dict:
    from dermvqa.serve.api import ServerThread, create_app

    app = create_app(model, processor, name, max_batch=max_batch, max_wait_s=args.max_wait_ms / 1000)
    with ServerThread(app, host="127.0.0.1") as server:
        load(server.url, name, image_uri, clients=2, requests=1, max_tokens=args.max_tokens)  # warm-up
        sizes_before = len(app.state.batcher.batch_sizes)
        result = load(server.url, name, image_uri, args.clients, args.requests, args.max_tokens)
        sizes = app.state.batcher.batch_sizes[sizes_before:]
    result["mean_batch_size"] = statistics.mean(sizes) if sizes else 0.0
    result["max_batch"] = max_batch
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder (default: a tiny random model)")
    ap.add_argument("--image", type=Path, default=PAD_PHOTO)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="how long the batcher waits to fill a batch")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.requests <= 1000):
        ap.error("keep the load bounded: 1-64 clients, 1-1000 requests each")

    import torch

    from dermvqa.infer.generate import load_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or tiny_model(Path(tmp) / "tiny")
        model, processor = load_model(model_dir, device=args.device)
        name = Path(model_dir).name
        image_uri = "data:image/png;base64," + base64.b64encode(args.image.read_bytes()).decode()
        runs = {}
        for mode, max_batch in (("batched", args.max_batch), ("one_at_a_time", 1)):
            print(f"{mode}: {args.clients} clients x {args.requests} requests, max_batch={max_batch}")
            runs[mode] = serve_and_load(model, processor, name, max_batch, args, image_uri)
    device = str(model.device) + (f" ({torch.cuda.get_device_name(model.device)})" if model.device.type == "cuda" else
                                  f" ({os.environ.get('OMP_NUM_THREADS', 'all')} threads)")
    print(f"\nmodel {model_dir if args.model else 'tiny random (no --model)'} on {device}; "
          f"max_tokens={args.max_tokens}")
    print(f"{'mode':<14} {'ok':>5} {'err':>4} {'p50 s':>8} {'p95 s':>8} {'req/s':>8} {'tok/s':>8} {'batch':>6}")
    for mode, r in runs.items():
        print(f"{mode:<14} {r['ok']:>5} {r['errors']:>4} {r['p50_s'] or 0:>8.3f} {r['p95_s'] or 0:>8.3f} "
              f"{r['requests_per_s']:>8.2f} {r['tokens_per_s']:>8.1f} {r['mean_batch_size']:>6.2f}")
    ratio = runs["batched"]["requests_per_s"] / runs["one_at_a_time"]["requests_per_s"]
    print(f"batched / one-at-a-time throughput: {ratio:.2f}x")
    for mode, r in runs.items():
        for sample in r["error_samples"]:
            print(f"  {mode} error: {sample}")
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps({"model": str(model_dir), "device": device, "args": {
            k: str(v) for k, v in vars(args).items()}, "runs": runs, "throughput_ratio": ratio}, indent=1))
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
