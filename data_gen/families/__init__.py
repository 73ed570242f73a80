"""QA families: one module each, with its question paraphrases and a `build(ctx) -> list[QARecord]`."""
from data_gen.families import (age_sex, body_location, caption, caption_report, category, diagnosis, morphology,
                               multiple_choice, neoplasm, symptoms, yes_no)
from data_gen.gates import words

FAMILIES = {m.NAME: m for m in (diagnosis, yes_no, multiple_choice, morphology, category, neoplasm, body_location,
                                symptoms, age_sex, caption_report, caption)}
# Families whose answers are the caption's own (filtered) text: exempt from the caption-only-word gate.
CAPTION_TEXT = {name for name, m in FAMILIES.items() if getattr(m, "CAPTION_TEXT", False)}
# Words the templates themselves bring into answers: never counted as caption-only facts.
TEMPLATE_WORDS = set().union(*(words(t) for name, m in FAMILIES.items() if name not in CAPTION_TEXT
                               for t in m.QUESTIONS + m.ANSWERS))


def resolve(names: list[str] | None) -> list:
    """Family modules for the given names (all when None); unknown names raise with the valid list."""
    if not names:
        return list(FAMILIES.values())
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown QA family {unknown}; choose from {sorted(FAMILIES)}")
    return [FAMILIES[n] for n in dict.fromkeys(names)]
