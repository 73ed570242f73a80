"""Turn a free-text reply into a verdict: normalisation (Chinese-aware), yes/no, option letter or option text.

A reply is scored by the answer it commits to: the text after its last "Answer:" tag when it has one,
else the whole reply. Nothing outside that commitment is read: a tagged answer that names no option
("... shows patch, crust. Answer: crust." when crust is not offered) is unparsed and wrong, never rescued
from the text before the tag. Naming several of the options is no commitment and scores as unparsed too;
`choice_verdict` says why. Chat models' formatting of a committed choice (Markdown emphasis,
`**Answer:** B`, LaTeX `\boxed{B}`) is read through.
"""
from __future__ import annotations

import re
import string

ARTICLES = {"a", "an", "the"}
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_ANSWER_TAG = re.compile(r"\banswer\s*(?:is\s*:?|:)\s*|答案\s*(?:是|为|[:：])\s*", re.IGNORECASE)
_MARKUP = re.compile(r"\*+|__|`")                 # Markdown emphasis and code marks
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
# Chinese verdict words, longest first so that 不是 / 没有 win over the 是 / 有 inside them
ZH_POLAR = {"不是": "no", "没有": "no", "不对": "no", "是的": "yes", "否": "no", "无": "no",
            "是": "yes", "有": "yes", "对": "yes"}
_ZH_POLAR = re.compile("|".join(sorted(ZH_POLAR, key=len, reverse=True)))
POLAR = {"yes": "yes", "no": "no", **ZH_POLAR}
_OR = {"en": re.compile(r"\s+or\s+", re.IGNORECASE), "zh": re.compile(r"还是|或者|或")}
_LIST_SEP = re.compile(r"[,，、]")
_ZH_UNITS = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")   # Latin words whole, anything else per character


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def tokens(text: str) -> list[str]:
    """Lowercased word tokens without articles; each Chinese character is a token of its own."""
    out = []
    for word in _WORD.findall(text.lower()):
        if has_cjk(word):
            out += [t for t in re.split(f"({_CJK.pattern})", word) if t]
        elif word not in ARTICLES:
            out.append(word)
    return out


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, drop articles, Chinese characters spaced, whitespace collapsed."""
    return " ".join(tokens(text))


def option_labels(n: int) -> list[str]:
    """A, B, C ... for up to 26 options, 1, 2, 3 ... beyond."""
    return list(string.ascii_uppercase[:n]) if n <= 26 else [str(i + 1) for i in range(n)]


def format_options(options: list[str]) -> str:
    """'A. x B. y ...' on one line, as data_gen's multiple-choice questions list them."""
    return " ".join(f"{lab}. {opt}" for lab, opt in zip(option_labels(len(options)), options))


def _after_answer_tag(reply: str) -> str | None:
    """The text after the last 'Answer:' / 'answer is' / '答案是', or None when there is no such tag."""
    tags = list(_ANSWER_TAG.finditer(reply))
    return reply[tags[-1].end():] if tags else None


def answer_text(reply: str) -> str:
    """The part of the reply that states its answer: after the last answer tag, else all of it."""
    tail = _after_answer_tag(reply)
    return reply if tail is None else tail


def polarity(option: str) -> str | None:
    """'yes' / 'no' for a yes/no option in English or Chinese (是, 不是, 有, 没有 ...), else None."""
    return POLAR.get(normalize(option).replace(" ", "") or option.strip())


def parse_yes_no(reply: str) -> str | None:
    """The first standalone yes/no (or Chinese verdict word) of the committed answer (after the last answer
    tag, else the whole reply); None if it has none."""
    text = answer_text(reply)
    found = [(m.start(), m.group(1).lower()) for m in [_YES_NO.search(text)] if m]
    found += [(m.start(), ZH_POLAR[m.group(0)]) for m in [_ZH_POLAR.search(text)] if m]
    return min(found)[1] if found else None


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


def _named(text: str, options: list[str]) -> set[int]:
    """Indices of the options the text names as whole words; an option found only inside a longer named
    option ('melanoma' in 'superficial spreading melanoma') does not count."""
    padded = f" {normalize(text)} "
    spans = []
    for i, o in enumerate(normalize(o) for o in options):
        start = padded.find(f" {o} ") if o else -1
        while start >= 0:
            spans.append((start, start + len(o) + 1, i))
            start = padded.find(f" {o} ", start + 1)
    return {i for s, e, i in spans if not any(s2 <= s and e <= e2 and (s2, e2) != (s, e) for s2, e2, _ in spans)}


def plain(reply: str) -> str:
    """The reply without Markdown emphasis or code marks, and with LaTeX \\boxed{X} unwrapped to X."""
    return _MARKUP.sub("", _BOXED.sub(r"\1", reply))


UNPARSED_REASONS = {
    "empty": "the reply (or its tagged answer) is empty",
    "no_verdict": "a yes/no question answered without yes or no",
    "not_an_option": "the committed answer names none of the offered options",
    "several_options": "the committed answer names several options",
}


def choice_verdict(reply: str, options: list[str]) -> tuple[int | None, str | None]:
    """(index of the option the reply commits to, None) or (None, the UNPARSED_REASONS key saying why not).

    Only the committed answer is read (after the last answer tag, else the whole reply)."""
    if not options:
        raise ValueError("choice_verdict needs the offered options")
    text = answer_text(plain(reply))
    if not text.strip():
        return None, "empty"
    polar = [polarity(o) for o in options]
    if len(options) == 2 and set(polar) == {"yes", "no"}:
        verdict = parse_yes_no(text)
        return (None, "no_verdict") if verdict is None else (polar.index(verdict), None)
    idx = _letter_choice(text, option_labels(len(options)))
    if idx is not None:
        return idx, None
    norm = [normalize(o) for o in options]
    if normalize(text) in norm:
        return norm.index(normalize(text)), None
    named = _named(text, options)
    if not named:
        return None, "not_an_option"
    return (named.pop(), None) if len(named) == 1 else (None, "several_options")


def parse_choice(reply: str, options: list[str]) -> int | None:
    """Index of the option the reply commits to, or None (counted as wrong; `choice_verdict` says why)."""
    return choice_verdict(reply, options)[0] if options else None


def exact_answer(reply: str, gold: str) -> bool:
    """Closed questions without listed options: the reply's answer equals the gold after normalisation."""
    g = normalize(gold)
    return bool(g) and normalize(answer_text(reply)) == g


def choices_in_question(question: str, gold: str) -> list[str]:
    """The named choices of a closed 'A, B or C?' question ('…肺、肝还是心脏？' in Chinese), or [] when the
    question names none or the gold answer is not among them."""
    lang = "zh" if has_cjk(question) else "en"
    q = question.strip().rstrip("?？.。 ")
    ors = list(_OR[lang].finditer(q))
    if not ors:
        return []
    left, right = q[:ors[-1].start()], q[ors[-1].end():]
    right = _LIST_SEP.split(right)[0].strip()
    parts = [p.strip() for p in _LIST_SEP.split(left)]
    if len(parts) > 1:                                   # 'lead-in, A, B or C': the lead-in is no choice
        items = parts[1:] + [right]
    else:                                                # 'Is it A or B': A is as long as B (or as the gold)
        unit = _ZH_UNITS.findall if lang == "zh" else str.split
        joiner = "" if lang == "zh" else " "
        g, l_words, r_words = unit(gold.strip().lower()), unit(left), unit(right)
        if g and [w.lower() for w in l_words[-len(g):]] == g:
            items = [joiner.join(l_words[-len(g):]), right]
        elif g and [w.lower() for w in r_words[:len(g)]] == g:     # 'T1 weighted or T2 weighted MRI'
            rest = [w.lower() for w in r_words[len(g):]]
            shared = next((j for j in range(len(rest), 0, -1) if [w.lower() for w in l_words[-j:]] == rest[:j]), 0)
            core = l_words[:len(l_words) - shared]
            items = [joiner.join(core[-len(g):]), joiner.join(r_words[:len(g)])]
        else:
            items = [joiner.join(l_words[-len(r_words):]), right]
    items = [i for i in items if normalize(i)]
    return items if normalize(gold) in [normalize(i) for i in items] and len(items) > 1 else []
