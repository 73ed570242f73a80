"""Turn a free-text reply into a verdict: normalisation, yes/no, option letter or option text."""
from __future__ import annotations

import re
import string

ARTICLES = {"a", "an", "the"}
_NON_WORD = re.compile(r"[^\w\s]|_")
_ANSWER_TAG = re.compile(r"\banswer\s*(?:is|:)\s*", re.IGNORECASE)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, drop articles, collapse whitespace."""
    words = _NON_WORD.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in ARTICLES)


def option_labels(n: int) -> list[str]:
    """A, B, C ... for up to 26 options, 1, 2, 3 ... beyond."""
    return list(string.ascii_uppercase[:n]) if n <= 26 else [str(i + 1) for i in range(n)]


def format_options(options: list[str]) -> str:
    """'A. x B. y ...' on one line, as data_gen's multiple-choice questions list them."""
    return " ".join(f"{lab}. {opt}" for lab, opt in zip(option_labels(len(options)), options))


def _after_answer_tag(reply: str) -> str | None:
    """The text after the last 'Answer:' / 'answer is', or None when there is no such tag."""
    tags = list(_ANSWER_TAG.finditer(reply))
    return reply[tags[-1].end():] if tags else None


def parse_yes_no(reply: str) -> str | None:
    """The verdict after 'Answer:' when present, else the first standalone yes/no; None if neither."""
    tail = _after_answer_tag(reply)
    for text in ([tail] if tail is not None else []) + [reply]:
        m = _YES_NO.search(text)
        if m:
            return m.group(1).lower()
    return None


def _letter_choice(text: str, labels: list[str]) -> int | None:
    """'B', '(B)', 'B.', 'B) psoriasis', '(B) psoriasis', 'B: psoriasis', 'option B' -> index of B."""
    alt = "|".join(re.escape(lab) for lab in labels)
    patterns = [rf"^\s*\(?\s*({alt})\s*\)?\s*[.:]?\s*$",      # the whole reply is a label
                rf"^\s*\(\s*({alt})\s*\)",                    # starts with a bracketed label
                rf"^\s*({alt})\s*[.):]\s",                    # starts with 'B. ' / 'B) ' / 'B: '
                rf"\b(?i:option)\s*\(?({alt})\b"]
    for pat in patterns:
        m = re.search(pat, text)
        if m:
            return labels.index(m.group(1))
    return None


def _text_choice(text: str, options: list[str]) -> int | None:
    """Exact normalised match, else the option mentioned first (longest wins at the same position)."""
    norm = normalize(text)
    opts = [normalize(o) for o in options]
    if norm in opts:
        return opts.index(norm)
    padded = f" {norm} "
    hits = [(padded.find(f" {o} "), -len(o), i) for i, o in enumerate(opts) if o and f" {o} " in padded]
    return min(hits)[2] if hits else None


def parse_choice(reply: str, options: list[str]) -> int | None:
    """Index of the option the reply picks, or None when it names none (counted as wrong)."""
    if not options:
        return None
    if sorted(normalize(o) for o in options) == ["no", "yes"]:
        verdict = parse_yes_no(reply)
        return None if verdict is None else [normalize(o) for o in options].index(verdict)
    labels = option_labels(len(options))
    tail = _after_answer_tag(reply)
    for text in ([tail] if tail is not None else []) + [reply]:
        idx = _letter_choice(text, labels)
        if idx is None:
            idx = _text_choice(text, options)
        if idx is not None:
            return idx
    return None


def mentions(reply: str, gold: str) -> bool:
    """Whole-word, normalised containment: the closed rule for questions without listed options."""
    g = normalize(gold)
    return bool(g) and f" {g} " in f" {normalize(reply)} "
