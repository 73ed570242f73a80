"""The `teacher_conversation` family: 3-5 question/answer turns about one image, written by an LLM teacher.

One request per image (LLaVA-Med's instruct data, behind our filters): the caption goes in as hidden
context, the visible facts (diagnosis path, visual concepts, a visible body site) as what may be
said, and the teacher replies with one JSON object `{"conversation": [{"question", "answer"}, ...]}`.
Every turn must pass the local teacher's LeakFilter (leak phrases, answer inside the question,
caption-only words and numbers), be no refusal, and state nothing a photo cannot support
(data_gen/sentences.py: age, history, treatment, tests, numbers, forum or video talk). Later turns
lean on earlier ones, so a conversation with one failing turn is rejected whole, under that reason.
"""
from __future__ import annotations

import json
import re

from data_gen.families.visibility import visible_location
from data_gen.sentences import REASONS, DiseaseNames, split, unsupported
from data_gen.teacher import SYSTEM, LeakFilter, visible_facts

FAMILY = "teacher_conversation"
PROMPT_VERSION = "conversation-v1"
MIN_TURNS, MAX_TURNS = 3, 5
INSTRUCTION = (f"Write a conversation of {MIN_TURNS} to {MAX_TURNS} turns between a person asking about this skin "
               "image and an assistant who looks at it. Questions cover what is visible (lesion type, colour, "
               "shape, surface, distribution, site) and the likely diagnosis; answers are short and use only the "
               "VISIBLE FACTS and what the image shows. Never mention age, history, duration, treatment, tests, "
               "causes or numbers. Reply with one JSON object and nothing else: "
               '{"conversation": [{"question": "...", "answer": "..."}, ...]}')
# What no answer may state, whatever the teacher saw in the hidden context.
_HARD = {"non-English text", "forum talk", "video or lecture talk", "refers to the text or another figure",
         "age or sex", "history or duration", "treatment or procedure", "laboratory or other test", "number"}
HARD_REASONS = [(reason, pattern) for reason, pattern in REASONS if reason in _HARD]
_REFUSAL = re.compile(r"\b(i('m| am) sorry|i cannot|i can't|as an ai|unable to (see|view|tell|determine)|"
                      r"not able to (see|view))", re.IGNORECASE)
_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$", re.IGNORECASE)


def facts_for(records: list[dict], row) -> str:
    """What the answers may state: the longest diagnosis path of the image's records, concepts, a visible site."""
    facts = visible_facts(max(records, key=lambda r: len(r["ontology_path"])), row)
    site = visible_location(row)[0] if row is not None else None
    return "; ".join(f for f in (facts, f"visible body site: {site}" if site else "") if f)


def messages(caption: str, facts: str, image_uri: str | None = None) -> list[dict]:
    """The chat request: system rules, then (the image and) the hidden context, facts and instruction."""
    text = f"HIDDEN CONTEXT: {caption}\nVISIBLE FACTS: {facts}\n{INSTRUCTION}"
    content = ([{"type": "image_url", "image_url": {"url": image_uri}}, {"type": "text", "text": text}]
               if image_uri else text)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def parse(text: str) -> tuple[list[dict], str]:
    """The turns of a teacher reply, or ([], why it is unusable)."""
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return [], "malformed JSON (no object in the reply)"
    try:
        data = json.loads(body[start:end + 1])
    except json.JSONDecodeError:
        return [], "malformed JSON"
    turns = data.get("conversation") if isinstance(data, dict) else None
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return [], "JSON without a conversation list"
    if not MIN_TURNS <= len(turns) <= MAX_TURNS:
        return [], f"not {MIN_TURNS}-{MAX_TURNS} turns"
    return [{"question": str(t.get("question") or "").strip(), "answer": str(t.get("answer") or "").strip()}
            for t in turns], ""


def gate(turns: list[dict], caption: str, facts: str, leaks: LeakFilter, names: DiseaseNames) -> str:
    """Why the conversation must go ("" = keep): the first failing turn's reason."""
    asked: set[str] = set()
    for t in turns:
        question, answer = t["question"], t["answer"]
        why = leaks.check(question, answer, caption, facts)
        if not why and _REFUSAL.search(answer):
            why = "refusal"
        if not why:
            why = next((f"answer states {r}" for s in split(answer)
                        if (r := unsupported(s, names, HARD_REASONS, must_name_visible=False))), "")
        if not why and question.lower() in asked:
            why = "repeated question"
        if why:
            return why
        asked.add(question.lower())
    return ""
