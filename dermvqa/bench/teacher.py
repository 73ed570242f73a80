"""Endpoint-teacher throughput at concurrency 1 vs N, and a kill -9 resume counted at the server.

Synthesizes QA for the 100 real Derm1M rows, then runs `teach_endpoint` against
  - `--server fake`: the teacher tests' fake endpoint (dermvqa.bench.fake_openai) answering each
    request after `--latency` seconds, like an LLM server whose replies take that long; or
  - `--server serve --model DIR`: the project's own `dermvqa serve api` on 127.0.0.1 with that model
    (rows without images are sent with a blank 40 px PNG; the tiny models write no JSON, so their
    replies are rejected, which costs the same requests);
and prints rows/s and tokens/s per concurrency. `--kill` (fake server only) also starts
`dermvqa data teach` as a process, SIGKILLs it after `--kill-after` answers, reruns it, and prints
how often each row reached the server.
Usage: python -m dermvqa.bench.teacher [--server fake --latency 0.2 | --server serve --model DIR] [--kill]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from dermvqa.bench.data_gen import SAMPLE

CSV, ONTOLOGY = SAMPLE / "Derm1M_v2_pretrain_ontology_sampled_100.csv", SAMPLE / "ontology.json"


def run(url: str, model: str, qa: Path, out: Path, concurrency: int, images: Path | None = None) -> dict:
    from chat_endpoint.endpoint import Endpoint
    from chat_endpoint.protocol import RequestOptions
    from data_gen.teacher_endpoint import teach_endpoint

    return teach_endpoint(qa, CSV, ONTOLOGY, out, Endpoint(url, model, timeout_s=300), RequestOptions(temperature=0.2),
                          max_tokens=16, concurrency=concurrency, images_dir=images, progress=False)


def serve(model_dir: Path, work: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dermvqa"), "serve", "api", "--model", str(model_dir),
                             "--port", str(port), "--device", "cpu"], stdout=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError("dermvqa serve api did not start")
            time.sleep(0.3)


def kill_and_resume(qa: Path, out: Path, latency: float, concurrency: int, kill_after: int) -> None:
    from dermvqa.bench.fake_openai import FakeEndpoint, good

    cli = [str(Path(sys.executable).parent / "dermvqa"), "data", "teach", "--qa", str(qa), "--csv", str(CSV),
           "--ontology", str(ONTOLOGY), "--model", "fake", "--out", str(out), "--concurrency", str(concurrency)]
    with FakeEndpoint(lambda row, n, request: (*good(row, n, request)[:2], latency)) as fake:
        proc = subprocess.Popen(cli + ["--endpoint", fake.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while len(fake.answered) < kill_after and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first, answered = Counter(fake.calls), set(fake.answered)
        with sqlite3.connect(out / "cache.sqlite") as db:
            committed = {image for (image,) in db.execute("SELECT image FROM answers")}
        subprocess.run(cli + ["--endpoint", fake.url], check=True, capture_output=True)
        second = Counter(fake.calls) - first
    asked_twice = {row for row in first if second[row]}
    print(f"kill -9 after {len(answered)} answers sent by the server, {len(committed)} committed to the cache: the "
          f"first run reached the server for {len(first)} rows, the rerun for {len(second)}; rows asked in both runs: "
          f"{len(asked_twice)}, of them committed before the kill: {len(asked_twice & committed)}, answered by the "
          f"server before the kill: {len(asked_twice & answered)}; rows in all: {len(set(first) | set(second))}; "
          f"most requests for one row: {max((first + second).values())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=["fake", "serve"], default="fake")
    ap.add_argument("--latency", type=float, default=0.2, help="fake server: seconds per reply")
    ap.add_argument("--model", type=Path, help="serve: model folder for dermvqa serve api")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--kill", action="store_true")
    ap.add_argument("--kill-after", type=int, default=40)
    args = ap.parse_args()

    from data_gen.synth import synthesize

    work = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    synthesize(CSV, ONTOLOGY, work / "synth", families=["diagnosis", "morphology"], progress=False)
    qa = work / "synth" / "qa"
    images = None
    if args.server == "serve":
        from PIL import Image
        import pyarrow.parquet as pq

        images = work / "images"
        for part in qa.rglob("*.parquet"):
            for name in set(pq.read_table(part, columns=["image"]).column("image").to_pylist()):
                (images / name).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 40), (190, 90, 80)).save(images / name, format="PNG")
        proc, url = serve(args.model, work)
    for c in args.concurrency:
        if args.server == "fake":
            from dermvqa.bench.fake_openai import FakeEndpoint, good

            with FakeEndpoint(lambda row, n, request: (*good(row, n, request)[:2], args.latency)) as fake:
                r = run(fake.url, "fake", qa, work / f"t{c}", c)
        else:
            r = run(url, args.model.name, qa, work / f"t{c}", c, images)
        print(f"concurrency {c}: {r['answered']} rows in {r['send_seconds']:.2f} s = {r['rows_per_s']} rows/s, "
              f"{r['completion_tokens_per_s']} completion tokens/s; kept {r['kept']}, rejected "
              f"{ {k: v['count'] for k, v in r['rejections'].items()} }, failed {r['failed']}")
    if args.server == "serve":
        proc.terminate()
        proc.wait()
    if args.kill:
        kill_and_resume(qa, work / "killed", args.latency, max(args.concurrency), args.kill_after)


if __name__ == "__main__":
    main()
