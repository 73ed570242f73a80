"""Quality gates: which rows the image can support, answer leaks, caption-only facts, and the rejection log.

Every rejected row or record is counted under a reason with a few examples, so nothing is dropped
silently. Row gates read only the CSV fields; record gates read the finished question/answer.
"""
from __future__ import annotations

import re
from collections import Counter

from data_gen.derm1m import Row

# Caption phrases saying the picture is not a photo of skin (a presenter, a slide, an animal,
# histology, imaging, a device, surgery).
NOT_A_SKIN_PHOTO = re.compile(
    r"\b(person|man|woman|doctor|dermatologist|speaker|presenter|host) (is )?"
    r"(discussing|talking|speaking|explaining|presenting)"
    r"|\b(slide|diagram|chart|infographic|flowchart|table|logo|illustration|animation|cartoon|graph|text)s? "
    r"(shows|showing|depicts|depicting|lists|listing|explains|explaining|compares|comparing)"
    r"|\b(horse|dog|cat|cow|cattle|mouse|mice|rat|rats|pig|sheep|goat|rabbit|monkey|equine|canine|feline|bovine"
    r"|murine|porcine)s?\b"
    r"|\bhistolog|\bhistopatholog|\bh&e\b|\bhaematoxylin|\bhematoxylin|\bmicroscop|\bimmunohisto|\bstain(ed|ing)\b"
    r"|\bx-ray|\bradiograph|\bct scan|\bmri\b|\bultrasound|\bsonograph|\bangiogra"
    r"|\b(shows|depicts) an? (handheld |dermatoscopic )?(device|instrument|handyscope|dermatoscope)\b"
    r"|\b(skin )?graft\b|\bflap\b|\bsutur|\bintraoperative|\bincision")  # matched against lower-cased text
# Cheap pre-check: NOT_A_SKIN_PHOTO can only match a caption holding one of these words or word starts.
_TRIGGER_WORDS = set("""discussing talking speaking explaining presenting slide slides diagram diagrams chart charts
infographic flowchart table logo illustration animation cartoon graph text horse horses dog dogs cat cats cow cows
cattle mouse mice rat rats pig pigs sheep goat goats rabbit rabbits monkey monkeys equine canine feline bovine murine
porcine h&e stained staining x-ray ct mri ultrasound device instrument handyscope dermatoscope graft flap""".split())
_TRIGGER_STARTS = ("histo", "haematox", "hematox", "microscop", "immunohisto", "radiograph", "sonograph", "angiogra",
                   "sutur", "intraoperative", "incision")
_TOKENS = re.compile(r"[a-z&\-]+")
# Youtube-style captions about the topic rather than the picture ("This image discusses eczema ...").
ABOUT_THE_TOPIC = re.compile(r"^\s*this (image|video|frame) (discusses|describes|explains|is about|talks about)",
                             re.IGNORECASE)

LEAK_PHRASES = re.compile(
    r"\b(caption|description|described|describes|according to|as stated|as mentioned|mentioned|the text|"
    r"the report|the article|the author|the video|the presenter|the poster|the forum|based on the)\b",
    re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z'\-]+")
STOPWORDS = set("""a an and are as at be been but by can could do does for from had has have in into is it its
of on or so than that the their them then there these they this those to was were which while who with
within without not no yes may might also other such some any each both more most very""".split())


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def row_gate(row: Row, has_diagnosis: bool) -> tuple[str, str]:
    """(reason, detail) why this row can give no image-grounded QA at all; ("", "") if it can."""
    if row.problem:
        return row.problem, row.detail
    if not row.caption:
        return "empty caption (cannot check what the image shows)", ""
    low = row.caption.lower()
    tokens = set(_TOKENS.findall(low))
    m = None
    if not tokens.isdisjoint(_TRIGGER_WORDS) or any(t.startswith(_TRIGGER_STARTS) for t in tokens if len(t) > 4):
        m = NOT_A_SKIN_PHOTO.search(low)
    if m:
        return "caption says the image is not a skin photo", m.group(0).strip().lower()
    if not has_diagnosis and not row.concepts:
        return "nothing the image can support (no diagnosis, no visual concepts)", ""
    if not row.concepts and ABOUT_THE_TOPIC.search(row.caption):
        return "caption is about the topic, not the picture (no visual concepts)", row.caption[:60]
    return "", ""


def leak(answer: str) -> str:
    """The leak phrase found in an answer ("" = none)."""
    m = LEAK_PHRASES.search(answer)
    return m.group(0).lower() if m else ""


def answer_in_question(question: str, answer: str) -> bool:
    """An open answer that already stands in the question teaches nothing about the image."""
    a, q = answer.strip().lower().rstrip("."), question.lower()
    start = q.find(a) if a else -1
    while start >= 0:
        end = start + len(a)
        if (start == 0 or not q[start - 1].isalpha()) and (end == len(q) or not q[end].isalpha()):
            return True
        start = q.find(a, start + 1)
    return False


def caption_only_words(answer: str, caption: str, allowed: set[str]) -> list[str]:
    """Content words of the answer that come from the caption and from nowhere else: the caption
    knows them, the structured fields and the templates do not, so the image may not show them."""
    return sorted((words(answer) & words(caption)) - allowed - STOPWORDS)


class Rejections:
    """reason -> count, plus the first few examples of each (row number, image, detail)."""

    def __init__(self, examples: int = 5):
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = {}
        self.keep = examples

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.keep:
            ex.append(example)

    def merge(self, other: dict) -> None:
        for reason, info in other.items():
            self.counts[reason] += info["count"]
            ex = self.examples.setdefault(reason, [])
            ex.extend(info["examples"][: self.keep - len(ex)])

    def as_dict(self) -> dict:
        return {r: {"count": c, "examples": self.examples.get(r, [])}
                for r, c in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))}
