"""Morphology: which listed feature is visible (closed), and which features are visible (open).

The closed answer is the offered option itself, as in multiple choice. A training row with two or more
features yields a second closed item that offers another of its features, so the same image has two
answers that only the options tell apart: the model has to read them. Test and validation rows keep
one closed item each (the same draws as before, so the benchmark items did not change).
Measured and not kept (quickstart, strict scoring, README "Measured"): listing the findings before the
answer ("The lesion shows macule, brown. Answer: macule.": morphology 0.526, the model committed to
listed findings that were not offered), and answering through the options ("Of the options, the
lesion shows X, not Y or Z. Answer: X.": 0.520).
The distractors are corpus concepts that overlap none of the row's concepts (data_gen/concepts.py).
"""
from data_gen.families.common import RowContext, lettered, shuffled_with_answer

NAME = "morphology"
CLOSED_QUESTIONS = [
    "Which of these features is visible?",
    "Which of the following can be seen in this lesion?",
    "Which feature does this skin show?",
    "Which of these findings is present?",
]
OPEN_QUESTIONS = [
    "What visual features does this lesion show?",
    "Describe the morphology of this lesion.",
    "What skin findings are visible?",
    "Which features can you see on this skin?",
]
QUESTIONS = CLOSED_QUESTIONS + OPEN_QUESTIONS
ANSWERS: list[str] = []
FIELDS = ["skin_concept"]


def build(ctx: RowContext) -> list:
    concepts = ctx.row.concepts
    if not concepts:
        return ctx.skip(NAME, "no visual concepts", missing=True)
    rng = ctx.rng(NAME)
    listed = ", ".join(concepts)
    out = [ctx.record(NAME, "open", rng.choice(OPEN_QUESTIONS), listed, label=listed, fields=FIELDS)]
    present = rng.choice(concepts)
    closed = _closed(ctx, rng, concepts, present, "closed")
    if closed is None:
        ctx.skip(NAME, "no corpus concept is surely absent (closed variant)")
        return out
    out.append(closed)
    others = [c for c in concepts if c != present]
    if ctx.split == "train" and others:
        second = _closed(ctx, rng, concepts, rng.choice(others), "closed_second")
        out += [second] if second else []
    return out


def _closed(ctx: RowContext, rng, concepts: list[str], present: str, variant: str):
    """A closed item offering `present` beside three absent corpus concepts (None when there are none)."""
    wrong = ctx.corpus.concepts.distractors(concepts, 3, rng)
    if not wrong:
        return None
    options, index = shuffled_with_answer(present, wrong, rng)
    q = f"{rng.choice(CLOSED_QUESTIONS)} {lettered(options)}"
    return ctx.record(NAME, variant, q, present, label=present, fields=FIELDS, options=options, answer_index=index)
