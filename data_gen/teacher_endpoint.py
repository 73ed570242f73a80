"""LLM teacher through any OpenAI-compatible endpoint (vLLM, SGLang, TGI, llama.cpp server, a hosted API).

For every image of a QA folder, one chat request asks for a `teacher_conversation`
(data_gen/teacher_conversation.py). At most `concurrency` requests are in flight, each sent by
data_gen/teacher_client.py (retries with backoff; 401/403/404 stop the run). Each paid
answer is committed to a per-row cache (data_gen/teacher_cache.py) before it is used, so a rerun or
a killed run resumes without sending an answered row again. Every reply goes through the gates;
rejections and failures are counted with their reasons in report.json / report.md, never dropped
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

from data_gen import gates
from data_gen.derm1m import iter_rows
from data_gen.families.caption import ontology_names
from data_gen.ontology import Ontology
from data_gen.records import OPEN, QARecord, write_parquet
from atomic_files import write_text_atomic
from data_gen.sentences import DiseaseNames
from data_gen.split import stable_int
from data_gen.teacher import LeakFilter
from data_gen.teacher_cache import AnswerCache, cache_key
from data_gen.teacher_client import Endpoint, RowFailed, TeachError, ask
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

    def body(self, ep: Endpoint, image_uri: str | None) -> dict:
        return {"model": ep.model, "messages": messages(self.caption, self.facts, image_uri),
                "max_tokens": ep.max_tokens, "temperature": ep.temperature,
                "extra_headers": {"X-Row": quote(self.image, safe="")}}  # the row, for the server's logs


def _jobs(file: Path, rows: dict, ep: Endpoint, images: Path | None, tally: Tally, left: list[int]) -> list[_Job]:
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
        digest = hashlib.sha256(job.image_file.read_bytes()).hexdigest() if job.image_file else None
        job.key = cache_key(image, PROMPT_VERSION, ep.model, job.body(ep, digest and f"sha256:{digest}"))
        jobs.append(job)
    return jobs


async def _answer_all(jobs: list[_Job], client, ep: Endpoint, cache: AnswerCache, tally: Tally, bar) -> dict:
    """key -> (text, prompt tokens, completion tokens) for every job answered now or before."""
    done = {}
    for job in jobs:
        hit = cache.get(job.key)
        if hit is not None:
            done[job.key] = hit
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
            try:
                uri = _image_uri(job.image_file) if job.image_file else None
                text, pt, ct = await ask(client, ep, job.body(ep, uri), tally)
            except RowFailed as e:
                tally.failures.add(e.args[0], f"{job.image}: {e.args[1]}".rstrip(": "))
            else:
                cache.put(job.key, job.image, ep.model, PROMPT_VERSION, text, pt, ct)  # committed before use
                done[job.key] = (text, pt, ct)
                tally.answered += 1
                tally.prompt_tokens += pt
                tally.completion_tokens += ct
            bar.update(1)
            seconds = tally.send_seconds + time.perf_counter() - start
            bar.set_postfix_str(f"cached {tally.cached}, {tally.completion_tokens / max(seconds, 1e-9):.0f} "
                                f"out tok/s, {(tally.prompt_tokens + tally.completion_tokens) / max(seconds, 1e-9):.0f}"
                                f" tok/s", refresh=False)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, ep.concurrency))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    tally.send_seconds += time.perf_counter() - start
    return done


async def _preflight(client, ep: Endpoint) -> None:
    """Fail at once when the endpoint cannot be reached or refuses the key (not after every row's retries)."""
    import openai

    try:
        await client.models.list()
    except openai.APIConnectionError as e:
        raise TeachError(f"{ep.url}: cannot reach the endpoint ({type(e).__name__}); is the server up?") from e
    except openai.APIStatusError as e:
        if e.status_code in (401, 403):
            raise TeachError(f"{ep.url}: the endpoint answered {e.status_code} ({e.message}); check "
                             "--api-key-env") from e  # other answers (no /models route): the chat calls decide


def _record(job: _Job, turns: list[dict]) -> QARecord:
    best = max(job.records, key=lambda r: len(r["ontology_path"]))
    fields = sorted({f for r in job.records for f in r["fields"]} - {"caption"}) + ["caption (hidden context)"]
    return QARecord(id=f"{stable_int('teacher', PROMPT_VERSION, job.image):016x}", image=job.image,
                    question=turns[0]["question"], answer=turns[0]["answer"], family=FAMILY, answer_type=OPEN,
                    ontology_path=best["ontology_path"], source=best["source"], source_type=best["source_type"],
                    split=best["split"], fields=fields, fitzpatrick=best["fitzpatrick"], follow_ups=turns[1:])


def teach_endpoint(qa_dir, csv_path, ontology_path, out_dir, ep: Endpoint, *, images_dir=None, limit=None,
                   progress: bool = True) -> dict:
    """Write teacher conversations for the images of qa_dir under out_dir/qa/ and return the report."""
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
    cache = AnswerCache(out_dir / "cache.sqlite")
    try:
        asyncio.run(_teach_files(files, qa_dir, out_dir, rows, leaks, names, ep, images_dir, total, cache, tally,
                                 progress))
    finally:
        cache.close()
    report = _report(tally, ep)
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(out_dir / "report.md", _markdown(report))
    return report


async def _teach_files(files, qa_dir, out_dir, rows, leaks, names, ep, images_dir, total, cache, tally, progress):
    import openai
    from tqdm import tqdm

    left = [total]
    async with openai.AsyncOpenAI(base_url=ep.url, api_key=ep.api_key, timeout=ep.timeout_s, max_retries=0) as client:
        await _preflight(client, ep)
        with tqdm(total=total, desc=f"teacher {ep.model}", unit="row", disable=not progress) as bar:
            for file in files:
                jobs = _jobs(file, rows, ep, Path(images_dir) if images_dir else None, tally, left)
                if not jobs and left[0] <= 0:
                    break  # --limit reached: later parts are not written
                answers = await _answer_all(jobs, client, ep, cache, tally, bar)
                kept = []
                for job in jobs:
                    if job.key not in answers:
                        continue
                    turns, why = parse(answers[job.key][0])
                    why = why or gate(turns, job.caption, job.facts, leaks, names)
                    if why:
                        tally.rejections.add(f"{FAMILY}: {why}", f"{job.image}: {answers[job.key][0][:100]!r}")
                    else:
                        kept.append(_record(job, turns))
                write_parquet(kept, out_dir / "qa" / file.relative_to(qa_dir))
                tally.kept += len(kept)


def _report(t: Tally, ep: Endpoint) -> dict:
    seconds = round(t.send_seconds, 3)
    return {"endpoint": ep.url, "model": ep.model, "prompt_version": PROMPT_VERSION, "concurrency": ep.concurrency,
            "rows": t.rows, "cached": t.cached, "answered": t.answered, "requests": t.requests, "kept": t.kept,
            "rejected": sum(t.rejections.counts.values()), "failed": sum(t.failures.counts.values()),
            "retries": dict(t.retries), "tokens": {"prompt": t.prompt_tokens, "completion": t.completion_tokens},
            "send_seconds": seconds, "rows_per_s": round(t.answered / seconds, 2) if seconds else None,
            "completion_tokens_per_s": round(t.completion_tokens / seconds, 1) if seconds else None,
            "rejections": t.rejections.as_dict(), "failures": t.failures.as_dict()}


def _markdown(r: dict) -> str:
    lines = ["# Teacher report", "",
             f"Endpoint {r['endpoint']}, model {r['model']}, prompt {r['prompt_version']}, concurrency "
             f"{r['concurrency']}.", "",
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
