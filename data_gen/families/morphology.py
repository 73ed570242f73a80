"""Morphology: which listed feature is visible (closed), and which features are visible (open).

The closed answer first lists what is seen, then picks the option ("The lesion shows macule, brown.
Answer: macule."), like yes/no: reading the lesion and matching it to the options are two steps.
Scored strictly, the quickstart model often commits to a listed finding that is not offered (morphology
0.967 as printed, 0.526 strict). Answering through the options instead ("Of the options, the lesion shows
X, not Y or Z. Answer: X.") was measured and not kept: 0.520 strict, the model still named unoffered
features (2026-12-07, README "Measured").
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
ANSWERS = ["The lesion shows {listed}. Answer: {present}."]
FIELDS = ["skin_concept"]


def build(ctx: RowContext) -> list:
    concepts = ctx.row.concepts
    if not concepts:
        return ctx.skip(NAME, "no visual concepts", missing=True)
    rng = ctx.rng(NAME)
    listed = ", ".join(concepts)
    out = [ctx.record(NAME, "open", rng.choice(OPEN_QUESTIONS), listed, label=listed, fields=FIELDS)]
    present = rng.choice(concepts)
    wrong = ctx.corpus.concepts.distractors(concepts, 3, rng)
    if not wrong:
        ctx.skip(NAME, "no corpus concept is surely absent (closed variant)")
        return out
    options, index = shuffled_with_answer(present, wrong, rng)
    q = f"{rng.choice(CLOSED_QUESTIONS)} {lettered(options)}"
    answer = ANSWERS[0].format(listed=listed, present=present)
    out.append(ctx.record(NAME, "closed", q, answer, label=present, fields=FIELDS, options=options,
                          answer_index=index))
    return out
