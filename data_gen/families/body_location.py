"""Body location: where on the body the lesion is, only when the photo can show the site."""
from data_gen.families.common import RowContext, lettered, shuffled_with_answer
from data_gen.families.visibility import visible_location

NAME = "body_location"
QUESTIONS = ["Where on the body is this lesion?", "Which body site is affected?",
             "On which part of the body is this skin finding?", "Where is this lesion located?"]
ANSWERS = []
FIELDS = ["body_location"]


def build(ctx: RowContext) -> list:
    if not ctx.row.locations:
        return ctx.skip(NAME, "no body location", missing=True)
    loc, why = visible_location(ctx.row)
    if loc is None:
        return ctx.skip(NAME, why)
    rng = ctx.rng(NAME)
    q = rng.choice(QUESTIONS)
    corpus = ctx.corpus
    pool = sorted(t for t in corpus.locations if not corpus.locations_overlap(t, loc))
    if not pool:
        return [ctx.record(NAME, "open", q, loc, label=loc, fields=FIELDS)]
    wrong = []
    while pool and len(wrong) < 3:
        pick = rng.choices(pool, weights=[corpus.locations[t] for t in pool])[0]
        wrong.append(pick)
        pool = [t for t in pool if not corpus.locations_overlap(t, pick)]
    options, index = shuffled_with_answer(loc, wrong, rng)
    return [ctx.record(NAME, "closed", f"{q} {lettered(options)}", loc, label=loc, fields=FIELDS,
                       options=options, answer_index=index)]
