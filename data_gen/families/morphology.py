"""Morphology: which listed feature is visible (closed), and which features are visible (open).

The closed answer goes through the offered options, then commits to one ("Of the options, the lesion shows
macule, not scale or nodule. Answer: macule."), like yes/no's "looks like X, not Y". An earlier format
listed every visible concept first ("The lesion shows macule, brown. Answer: macule."), which taught the
model to commit to a listed finding that was not offered (the quickstart's morphology items: 143 of 329
right only through a parser rescue, gone once commitments were scored strictly).
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
ANSWERS = ["Of the options, the lesion shows {present}, not {absent}. Answer: {present}."]
FIELDS = ["skin_concept"]


def closed_answer(options: list[str], index: int) -> str:
    """The trained reply naming options[index] present and every other option absent."""
    others = [o for i, o in enumerate(options) if i != index]
    absent = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} or {others[-1]}"
    return ANSWERS[0].format(present=options[index], absent=absent)


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
    out.append(ctx.record(NAME, "closed", q, closed_answer(options, index), label=present, fields=FIELDS, options=options,
                          answer_index=index))
    return out
