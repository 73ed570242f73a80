"""Optional LLM teacher: a local transformers chat model rewrites open questions and adds free-form turns.

The Derm1M caption goes into the prompt as hidden context (so the wording can be natural), but
every output passes the same gates as the template families plus a stricter caption check: an
answer may not contain a number from the caption, nor a word that only this row's caption knows
(words common to many captions are fine). What fails is counted with its reason, never kept.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from data_gen import gates
from data_gen.derm1m import iter_rows
from data_gen.families import TEMPLATE_WORDS
from data_gen.records import QARecord, write_parquet
from data_gen.split import stable_int

SYSTEM = ("You write training data for a dermatology assistant that sees only the image. The HIDDEN CONTEXT "
          "is for internal reference only: never mention it, never quote it, and never state anything that only "
          "it tells (history, treatment, causes, age, numbers). Use only the VISIBLE FACTS.")
_QA = re.compile(r"Q:\s*(?P<q>.+?)\s*A:\s*(?P<a>.+)", re.DOTALL)
_NUMBER = re.compile(r"\d+")
OPEN_FAMILIES = ("diagnosis", "morphology", "body_location", "symptoms", "caption_report")


class Teacher:
    """Wraps a causal LM + tokenizer with a chat template; `complete(messages_batch)` -> texts."""

    def __init__(self, model=None, tokenizer=None, max_new_tokens: int = 96,
                 generate_fn: Callable[[list[list[dict]]], list[str]] | None = None):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self._generate_fn = generate_fn

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | None = None, trust_remote_code: bool = False,
                        **kw) -> "Teacher":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        except OSError as e:
            raise ValueError(f"teacher model {name_or_path}: not a model folder, and no hub model of that name "
                             f"could be loaded ({e})") from e
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).to(device)
        return cls(model.eval(), tok, **kw)

    def complete(self, batch: list[list[dict]]) -> list[str]:
        if self._generate_fn is not None:
            return self._generate_fn(batch)
        import torch

        texts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def visible_facts(rec: dict, row) -> str:
    facts = [f"diagnosis path: {' > '.join(rec['ontology_path'])}" if rec["ontology_path"] else ""]
    if row is not None and row.concepts:
        facts.append(f"visible features: {', '.join(row.concepts)}")
    return "; ".join(f for f in facts if f)


def paraphrase_messages(rec: dict, caption: str, facts: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"HIDDEN CONTEXT: {caption}\nVISIBLE FACTS: {facts}\n"
                                        f"Rewrite this question in other words, same meaning, one line, "
                                        f"without giving the answer:\n{rec['question']}"}]


def free_turn_messages(caption: str, facts: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"HIDDEN CONTEXT: {caption}\nVISIBLE FACTS: {facts}\n"
                                        "Write one question a clinician could ask about this image and a short "
                                        "answer that uses only the visible facts. Format: Q: <question> A: <answer>"}]


class LeakFilter:
    """Record gates for teacher text: leak phrases, answer in question, caption-only words and numbers."""

    def __init__(self, captions: list[str], common_share: float = 0.01):
        df = Counter(w for c in captions for w in gates.words(c))
        floor = max(3, common_share * len(captions))
        self.common = {w for w, n in df.items() if n >= floor}

    def check(self, question: str, answer: str, caption: str, facts: str) -> str:
        """Why the pair must go ("" = keep)."""
        if not question.strip() or not answer.strip():
            return "empty question or answer"
        if gates.leak(question) or gates.leak(answer):
            return "answer leak phrase"
        if gates.answer_in_question(question, answer):
            return "answer inside the question"
        if set(_NUMBER.findall(answer)) & set(_NUMBER.findall(caption)):
            return "caption-only number in answer"
        allowed = TEMPLATE_WORDS | self.common | gates.words(facts) | gates.words(question)
        if gates.caption_only_words(answer, caption, allowed):
            return "caption-only fact in answer"
        return ""


def teach(qa_dir, csv_path, out_dir, teacher: Teacher, *, free_turns: bool = True, batch_size: int = 8,
          limit: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Write teacher records (families teacher_paraphrase / teacher_free) mirroring qa_dir's parts."""
    from tqdm import tqdm

    qa_dir, out_dir = Path(qa_dir), Path(out_dir)
    rows = {r.filename: r for r in iter_rows(csv_path) if not r.problem}
    filt = LeakFilter([r.caption for r in rows.values()])
    kept, rejections, seen_images = 0, gates.Rejections(), set()
    files = sorted(qa_dir.rglob("*.parquet"))
    for file in tqdm(files, desc="teacher", disable=not progress):
        target = out_dir / file.relative_to(qa_dir)
        if target.exists():
            continue
        jobs = []
        for rec in pq.read_table(file).to_pylist():
            if limit is not None and len(seen_images) >= limit and rec["image"] not in seen_images:
                continue
            row = rows.get(rec["image"])
            caption, facts = (row.caption if row else ""), visible_facts(rec, row)
            if rec["family"] in OPEN_FAMILIES and rec["answer_type"] == "open":
                jobs.append(("teacher_paraphrase", rec, caption, facts, paraphrase_messages(rec, caption, facts)))
            if free_turns and rec["image"] not in seen_images:
                jobs.append(("teacher_free", rec, caption, facts, free_turn_messages(caption, facts)))
            seen_images.add(rec["image"])
        out = []
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            for (family, rec, caption, facts, _), text in zip(batch, teacher.complete([j[4] for j in batch])):
                if family == "teacher_paraphrase":
                    question, answer = text.strip().splitlines()[0].strip() if text.strip() else "", rec["answer"]
                else:
                    m = _QA.search(text)
                    question, answer = (m["q"].strip(), m["a"].strip()) if m else ("", "")
                why = filt.check(question, answer, caption, facts)
                if why:
                    rejections.add(f"{family}: {why}", f"{rec['image']}: {text[:80]!r}")
                    continue
                out.append(QARecord(id=f"{stable_int('teacher', seed, rec['id'], family):016x}", image=rec["image"],
                                    question=question, answer=answer, family=family, answer_type="open",
                                    label=rec["label"] if family == "teacher_paraphrase" else "",
                                    ontology_path=rec["ontology_path"], source=rec["source"],
                                    source_type=rec["source_type"], split=rec["split"],
                                    fields=rec["fields"] + ["caption (hidden context)"],
                                    fitzpatrick=rec["fitzpatrick"]))
        write_parquet(out, target)  # written even when empty: marks the part done for resume
        kept += len(out)
    return {"kept": kept, "rejections": rejections.as_dict()}
