"""Age group and sex, only where the caption says the picture shows the person (data_gen/families/visibility.py)."""
from data_gen.families.common import RowContext, lettered
from data_gen.families.visibility import age_group, person_shown

NAME = "age_sex"
QUESTIONS = ["About how old is the person in this image?", "Which age group does this patient belong to?",
             "Is the person in this image male or female?", "What is the sex of the person shown?"]
ANSWERS = ["an infant", "a child", "a teenager", "an adult", "an older adult", "male", "female"]
AGE_OPTIONS = ANSWERS[:5]


def build(ctx: RowContext) -> list:
    if ctx.row.age is None and ctx.row.gender is None:
        return ctx.skip(NAME, "no age or sex", missing=True)
    ok, why = person_shown(ctx.row)
    if not ok:
        return ctx.skip(NAME, why)
    rng = ctx.rng(NAME)
    out = []
    if ctx.row.age is not None:
        group = age_group(ctx.row.age)
        q = f"{rng.choice(QUESTIONS[:2])} {lettered(AGE_OPTIONS)}"
        out.append(ctx.record(NAME, "age", q, group, label=group, fields=["age", "caption"],
                              options=AGE_OPTIONS, answer_index=AGE_OPTIONS.index(group)))
    if ctx.row.gender is not None:
        q = f"{rng.choice(QUESTIONS[2:])} {lettered(['male', 'female'])}"
        out.append(ctx.record(NAME, "sex", q, ctx.row.gender, label=ctx.row.gender,
                              fields=["gender", "caption"], options=["male", "female"],
                              answer_index=["male", "female"].index(ctx.row.gender)))
    return out
