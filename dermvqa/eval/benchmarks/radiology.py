"""SLAKE (`train/validate/test.json`, images under `imgs/`) and VQA-RAD (`VQA_RAD Dataset Public.json`,
images in `VQA_RAD Image Folder/`), the general medical VQA references.

Closed questions are scored the way LLaVA-Med and PMC-VQA score them, on the answer the reply commits to:
yes/no questions (and Chinese 是/否, 有/没有 …) on the verdict; "A, B or C?" questions on the named choice
(several choices named = unparsed); any other closed question by normalised exact match. SLAKE keeps
en by default (`:lang=zh`, `:lang=all`, strata by language); VQA-RAD keeps its official test set
(phrase_type test_freeform/test_para) unless `:split=train` or `:split=all`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from dermvqa.eval.benchmarks.common import BenchError, ImageFinder, Loaded, image_roots, read_json_list, wrong_kind
from dermvqa.eval.items import CLOSED, OPEN, EvalItem
from dermvqa.eval.parse import choices_in_question, normalize, polarity

ZH_PAIRS = [("是", "否"), ("是的", "不是"), ("有", "没有"), ("对", "不对"), ("有", "无")]
VQARAD_SPLITS = {"test_freeform": "test", "test_para": "test", "freeform": "train", "para": "train"}


def _polar_options(answer: str, lang: str) -> list[str]:
    if lang != "zh":
        return ["yes", "no"]
    return list(next((p for p in ZH_PAIRS if answer in p), ZH_PAIRS[0]))


def make_item(item_id: str, image: Path, question: str, answer: str, closed: bool, lang: str,
              **fields) -> EvalItem:
    """An EvalItem with options for the closed questions that have them (yes/no or named choices)."""
    common = dict(id=item_id, images=[image], question=question, references=[answer], label=answer, lang=lang,
                  **fields)
    if not closed:
        return EvalItem(**common, answer_type=OPEN)
    verdict = polarity(answer)
    if verdict:
        options = _polar_options(answer, lang)
        return EvalItem(**common, answer_type=CLOSED, options=options,
                        answer_index=[polarity(o) for o in options].index(verdict))
    options = choices_in_question(question, answer)
    if not options:
        return EvalItem(**common, answer_type=CLOSED)
    return EvalItem(**common, answer_type=CLOSED, options=options,
                    answer_index=[normalize(o) for o in options].index(normalize(answer)))


def _answer_type(value, where: str) -> bool:
    """True for CLOSED; VQA-RAD writes some with stray whitespace ("CLOSED ")."""
    kind = str(value or "").strip().upper()
    if kind not in ("OPEN", "CLOSED"):
        raise BenchError(f"{where}: answer_type {value!r} is neither OPEN nor CLOSED")
    return kind == "CLOSED"


def load_slake(path: Path, args: list[str], opts: dict) -> Loaded:
    lang = opts.get("lang", "en")
    if lang not in ("en", "zh", "all"):
        raise BenchError(f"slake lang must be en, zh or all, got {lang!r}")
    entries = read_json_list(path, "slake")
    if entries and not {"img_name", "q_lang"} <= set(entries[0]):
        raise wrong_kind(path, "slake", "entry 0 has no img_name / q_lang")
    roots = image_roots(opts, path, ["imgs"])
    find = ImageFinder(roots)
    split = next((s for s in ("train", "validate", "test") if s in path.name.lower()), "")
    items, skipped = [], Counter()
    for i, e in enumerate(entries):
        where = f"{path}: entry {i} (qid {e.get('qid')})"
        if not e.get("img_name") or not e.get("question") or "answer" not in e:
            raise BenchError(f"{where}: needs img_name, question and answer")
        closed = _answer_type(e.get("answer_type"), where)
        q_lang = str(e.get("q_lang") or "")
        if q_lang not in ("en", "zh"):
            raise BenchError(f"{where}: q_lang {q_lang!r} is neither en nor zh")
        if lang != "all" and q_lang != lang:
            skipped[f"q_lang {q_lang} (lang={lang})"] += 1
            continue
        answer = str(e["answer"]).strip()
        if not answer:
            skipped["empty answer"] += 1
            continue
        items.append(make_item(str(e.get("qid", i)), find(e["img_name"]), e["question"], answer, closed, q_lang,
                               family=str(e.get("content_type") or ""), source=str(e.get("modality") or ""),
                               split=split))
    return Loaded(items, skipped, info={"lang": lang}, roots=roots)


def load_vqarad(path: Path, args: list[str], opts: dict) -> Loaded:
    entries = read_json_list(path, "vqarad")
    if entries and not {"image_name", "phrase_type"} <= set(entries[0]):
        raise wrong_kind(path, "vqarad", "entry 0 has no image_name / phrase_type")
    roots = image_roots(opts, path, ["VQA_RAD Image Folder"])
    find = ImageFinder(roots)
    items, skipped = [], Counter()
    for i, e in enumerate(entries):
        where = f"{path}: entry {i} (qid {e.get('qid')})"
        if not e.get("image_name") or not e.get("question") or e.get("answer") is None:
            raise BenchError(f"{where}: needs image_name, question and answer")
        closed = _answer_type(e.get("answer_type"), where)
        phrase = str(e.get("phrase_type") or "").strip()
        if phrase not in VQARAD_SPLITS:
            raise BenchError(f"{where}: phrase_type {phrase!r} is not one of {', '.join(VQARAD_SPLITS)}")
        answer = str(e["answer"]).strip()            # some answers are JSON integers
        if not answer:
            skipped["empty answer"] += 1
            continue
        items.append(make_item(str(e.get("qid", i)), find(e["image_name"]), e["question"], answer, closed, "en",
                               family=str(e.get("question_type") or "").strip(),
                               source=str(e.get("image_organ") or "").strip(), split=VQARAD_SPLITS[phrase]))
    return Loaded(items, skipped, roots=roots, default_split="test")
