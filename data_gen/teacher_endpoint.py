"""LLM teacher through any OpenAI-compatible endpoint (vLLM, SGLang, TGI, llama.cpp server, a hosted API).

For every image of a QA folder, one chat request asks for a `teacher_conversation`
(data_gen/teacher_conversation.py). At most `concurrency` requests are in flight, each sent by
chat_endpoint/client.py, as `dermvqa eval`'s openai: backend sends its own: retries with backoff,
401/403/404 stop the run, the token limit as max_tokens or max_completion_tokens, no temperature for
endpoints that take only their default, extra body fields, replies read from content parts with `<think>`
blocks and reasoning fields cut off. Each answer is committed to OUT/cache.sqlite (chat_endpoint/cache.py;
its key: image, prompt version, model and request body, an inline image by its sha256; its prompt column
names the prompt version and the image) before it is used, so a rerun or a killed run resumes without
sending an answered row again; a row without an answer (failed request; empty, refused or reasoning-only
reply) goes to the cache's failure history and is asked again by a rerun. Every answer goes through the
gates; rejections and failures are counted with their reasons in report.json / report.md, never dropped
silently. Output: OUT/qa/<same relative path as in --qa>.parquet, written atomically per part.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import mimetypes
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq

from atomic_files import write_text_atomic
from chat_endpoint.cache import CACHE_FILE, cache_key
from chat_endpoint.client import AsyncChatClient
from chat_endpoint.endpoint import Endpoint, Failure, Sent
from chat_endpoint.protocol import RequestOptions
from data_gen import gates
from data_gen.derm1m import iter_rows
from data_gen.families.caption import ontology_names
from data_gen.ontology import Ontology
from data_gen.records import OPEN, QARecord, write_parquet
from data_gen.sentences import DiseaseNames
from data_gen.split import stable_int
from data_gen.teacher import LeakFilter
from data_gen.teacher_conversation import FAMILY, PROMPT_VERSION, facts_for, gate, messages, parse


@dataclass
class Tally:
    rows: int = 0
    cached: int = 0
    answered: int = 0
    requests: int = 0
    kept: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    send_seconds: float = 0.0
    retries: Counter = field(default_factory=Counter)
    rejections: gates.Rejections = field(default_factory=gates.Rejections)
    failures: gates.Rejections = field(default_factory=gates.Rejections)


def _image_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


@dataclass
class _Job:
    image: str
    records: list[dict]
    caption: str
    facts: str
    image_file: Path | None  # sent inline when the run has --images; read only when the request goes out
    key: str = ""
    image_sha256: str = ""

    def body(self, client: AsyncChatClient, max_tokens: int, image_uri: str | None) -> dict:
        return client.body(messages(self.caption, self.facts, image_uri), max_tokens) | {
            "extra_headers": {"X-Row": quote(self.image, safe="")}}  # the row, for the server's logs


def _jobs(file: Path, rows: dict, client: AsyncChatClient, max_tokens: int, images: Path | None, tally: Tally,
          left: list[int]) -> list[_Job]:
    """One job per image of a part file (in file order), up to `left[0]` images in all."""
    by_image: dict[str, list[dict]] = {}
    for rec in pq.read_table(file).to_pylist():
        by_image.setdefault(rec["image"], []).append(rec)
    jobs = []
    for image, recs in by_image.items():
        if left[0] <= 0:
            break
        left[0] -= 1
        tally.rows += 1
        row = rows.get(image)
        if row is None:
            tally.failures.add("image has no row in the CSV (another --csv?)", f"{file.name}: {image}")
            continue
        if images is not None and not (images / image).is_file():
            tally.failures.add("image file not found", str(images / image))
            continue
        job = _Job(image, recs, row.caption, facts_for(recs, row), images / image if images else None)
        job.image_sha256 = hashlib.sha256(job.image_file.read_bytes()).hexdigest() if job.image_file else ""
        placeholder = job.image_sha256 and f"sha256:{job.image_sha256}"
        job.key = cache_key(image, PROMPT_VERSION, client.endpoint.model, job.body(client, max_tokens, placeholder))
        jobs.append(job)
    return jobs


async def _answer_all(jobs: list[_Job], client: AsyncChatClient, max_tokens: int, concurrency: int, tally: Tally,
                      bar) -> dict:
    """key -> answer text for every job answered now or before."""
    done = {}
    for job in jobs:
        row = client.cached(job.key)
        if row is not None:
            done[job.key] = row["reply"]
            tally.cached += 1
            bar.update(1)
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        if job.key not in done:
            queue.put_nowait(job)
    start = time.perf_counter()

    async def worker():
        while not queue.empty():
            job = queue.get_nowait()
            uri = _image_uri(job.image_file) if job.image_file else None
            sent = await client.send(job.key, job.body(client, max_tokens, uri), f"{PROMPT_VERSION}: {job.image}",
                                     job.image_sha256)  # an answer is committed to the cache before it is used
            if "failure" in sent.row:
                tally.failures.add(*_failure(job, sent))
            else:
                done[job.key] = sent.row["reply"]
                tally.answered += 1
                tally.prompt_tokens += sent.result.prompt_tokens
                tally.completion_tokens += sent.result.completion_tokens
            bar.update(1)
            seconds = tally.send_seconds + time.perf_counter() - start
            bar.set_postfix_str(f"cached {tally.cached}, {tally.completion_tokens / max(seconds, 1e-9):.0f} "
                                f"out tok/s, {(tally.prompt_tokens + tally.completion_tokens) / max(seconds, 1e-9):.0f}"
                                f" tok/s", refresh=False)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    tally.send_seconds += time.perf_counter() - start
    return done


def _failure(job: _Job, sent: Sent) -> tuple[str, str]:
    """A row without an answer: its reason in the report (`error_http (HTTP 500)`, `empty`, ...) and example."""
    row, status = sent.row, sent.result.status if isinstance(sent.result, Failure) else None
    tries = f" ({sent.tries} tries)" if sent.tries > 1 else ""
    hint = f" (hint: {row['hint']})" if row.get("hint") else ""
    return row["failure"] + (f" (HTTP {status})" if status else ""), f"{job.image}: {row['error']}{tries}{hint}"


def _record(job: _Job, turns: list[dict]) -> QARecord:
    best = max(job.records, key=lambda r: len(r["ontology_path"]))
    fields = sorted({f for r in job.records for f in r["fields"]} - {"caption"}) + ["caption (hidden context)"]
    return QARecord(id=f"{stable_int('teacher', PROMPT_VERSION, job.image):016x}", image=job.image,
                    question=turns[0]["question"], answer=turns[0]["answer"], family=FAMILY, answer_type=OPEN,
                    ontology_path=best["ontology_path"], source=best["source"], source_type=best["source_type"],
                    split=best["split"], fields=fields, fitzpatrick=best["fitzpatrick"], follow_ups=turns[1:])


def teach_endpoint(qa_dir, csv_path, ontology_path, out_dir, endpoint: Endpoint, request: RequestOptions, *,
                   max_tokens: int, concurrency: int, images_dir=None, limit=None, progress: bool = True) -> dict:
    """Write teacher conversations for the images of qa_dir under out_dir/qa/ and return the report; `request`
    is the decoding parameters besides the token limit `max_tokens` (`dermvqa data teach` gives its defaults)."""
    qa_dir, out_dir = Path(qa_dir), Path(out_dir)
    files = sorted(qa_dir.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet QA shards under {qa_dir}")
    rows = {r.filename: r for r in iter_rows(csv_path) if not r.problem}
    leaks = LeakFilter([r.caption for r in rows.values()])
    names = ontology_names(Ontology.load(ontology_path)) if ontology_path else DiseaseNames([])
    total = sum(len(set(pq.read_table(f, columns=["image"]).column("image").to_pylist())) for f in files)
    total = min(total, limit) if limit is not None else total
    tally = Tally()
    client = AsyncChatClient(endpoint, request, out_dir / CACHE_FILE, token_flag="--max-tokens")
    asyncio.run(_teach_files(files, qa_dir, out_dir, rows, leaks, names, client, max_tokens, concurrency,
                             images_dir, total, tally, progress))
    report = _report(tally, client, max_tokens, concurrency)
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(out_dir / "report.md", _markdown(report))
    return report


async def _teach_files(files, qa_dir, out_dir, rows, leaks, names, client, max_tokens, concurrency, images_dir,
                       total, tally, progress):
    from tqdm import tqdm

    left = [total]
    async with client:
        with tqdm(total=total, desc=f"teacher {client.endpoint.model}", unit="row", disable=not progress) as bar:
            for file in files:
                jobs = _jobs(file, rows, client, max_tokens, Path(images_dir) if images_dir else None, tally, left)
                if not jobs and left[0] <= 0:
                    break  # --limit reached: later parts are not written
                answers = await _answer_all(jobs, client, max_tokens, concurrency, tally, bar)
                kept = []
                for job in jobs:
                    if job.key not in answers:
                        continue
                    turns, why = parse(answers[job.key])
                    why = why or gate(turns, job.caption, job.facts, leaks, names)
                    if why:
                        tally.rejections.add(f"{FAMILY}: {why}", f"{job.image}: {answers[job.key][:100]!r}")
                    else:
                        kept.append(_record(job, turns))
                write_parquet(kept, out_dir / "qa" / file.relative_to(qa_dir))
                tally.kept += len(kept)
    tally.requests, tally.retries = client.requests, client.retries


def _report(t: Tally, client: AsyncChatClient, max_tokens: int, concurrency: int) -> dict:
    seconds = round(t.send_seconds, 3)
    return {"endpoint": client.endpoint.url, "model": client.endpoint.model, "prompt_version": PROMPT_VERSION,
            "concurrency": concurrency, "decoding": client.request.decoding(f"--max-tokens {max_tokens}"),
            "rows": t.rows, "cached": t.cached, "answered": t.answered, "requests": t.requests, "kept": t.kept,
            "rejected": sum(t.rejections.counts.values()), "failed": sum(t.failures.counts.values()),
            "retries": dict(t.retries), "tokens": {"prompt": t.prompt_tokens, "completion": t.completion_tokens},
            "send_seconds": seconds, "rows_per_s": round(t.answered / seconds, 2) if seconds else None,
            "completion_tokens_per_s": round(t.completion_tokens / seconds, 1) if seconds else None,
            "rejections": t.rejections.as_dict(), "failures": t.failures.as_dict()}


def _markdown(r: dict) -> str:
    lines = ["# Teacher report", "",
             f"Endpoint {r['endpoint']}, model {r['model']}, prompt {r['prompt_version']}, concurrency "
             f"{r['concurrency']}; {r['decoding']}.", "",
             f"Rows {r['rows']}: answered now {r['answered']} ({r['requests']} requests, {r['rows_per_s']} rows/s, "
             f"{r['completion_tokens_per_s']} completion tokens/s), from the cache {r['cached']}, "
             f"failed {r['failed']}. "
             f"Conversations kept {r['kept']}, rejected {r['rejected']}. Retries: {r['retries'] or 'none'}.", ""]
    for title, key in (("Rejected replies", "rejections"), ("Rows without an answer (a rerun asks again)",
                                                             "failures")):
        lines += [f"## {title}", "", "| reason | count | example |", "|---|---|---|"]
        lines += [f"| {k} | {v['count']} | {(v['examples'] or [''])[0][:120].replace('|', '/')} |"
                  for k, v in r[key].items()] + [""]
    return "\n".join(lines)
