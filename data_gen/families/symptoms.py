"""Symptoms a photo can show (bleeding, crusting, oozing, ...); felt symptoms (tender, itch) are never asked."""
from data_gen.families.common import RowContext, join_terms, lettered, shuffled_with_answer
from data_gen.families.visibility import visible_signs

NAME = "symptoms"
QUESTIONS = ["Which of these signs can be seen on the lesion?", "Which of the following does this lesion show?",
             "What visible signs does this lesion have?", "What can be seen on the surface of this lesion?"]
ANSWERS = []
FIELDS = ["symptoms"]


def build(ctx: RowContext) -> list:
    if not ctx.row.symptoms:
        return ctx.skip(NAME, "no symptoms", missing=True)
    signs = visible_signs(ctx.row)
    if not signs:
        return ctx.skip(NAME, "symptoms not visible in a photo", ", ".join(ctx.row.symptoms))
    rng = ctx.rng(NAME)
    wrong = [s for s in sorted(ctx.corpus.signs) if s not in signs]
    if not wrong:
        return [ctx.record(NAME, "open", rng.choice(QUESTIONS[2:]), join_terms(signs), label=", ".join(signs),
                           fields=FIELDS)]
    present = rng.choice(signs)
    options, index = shuffled_with_answer(present, rng.sample(wrong, min(3, len(wrong))), rng)
    return [ctx.record(NAME, "closed", f"{rng.choice(QUESTIONS[:2])} {lettered(options)}", present, label=present,
                       fields=FIELDS, options=options, answer_index=index)]
