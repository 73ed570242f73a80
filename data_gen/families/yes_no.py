"""Yes/no with hard negatives: the answer states the finding first, then the verdict.

Which images are asked about which negative is decided corpus-wide (data_gen/balance.py) so that
every diagnosis is asked exactly as often with answer yes as with answer no.
"""
from data_gen.families.common import DX_FIELDS, RowContext

NAME = "yes_no"
QUESTIONS = [
    "Is this {dx}?",
    "Does this image show {dx}?",
    "Could this lesion be {dx}?",
    "Is the condition in this photo {dx}?",
    "Does this skin look like {dx}?",
    "Is {dx} the right diagnosis here?",
]
ANSWERS = ["The lesion looks like {dx}. Answer: yes.", "The lesion looks like {dx}, not {neg}. Answer: no."]
OPTIONS = ["yes", "no"]


def build(ctx: RowContext) -> list:
    dx = ctx.single_diagnosis
    if dx is None:
        return ctx.skip_without_single_diagnosis(NAME)
    name = ctx.corpus.dx_name(dx)
    rng = ctx.rng(NAME)
    out = []
    if ctx.plan.yes:
        q = rng.choice(QUESTIONS).format(dx=name)
        out.append(ctx.record(NAME, "yes", q, ANSWERS[0].format(dx=name), label="yes", fields=DX_FIELDS,
                              options=OPTIONS, answer_index=0))
    if ctx.plan.negative is not None:
        neg = ctx.corpus.dx_name(ctx.plan.negative)
        q = rng.choice(QUESTIONS).format(dx=neg)
        out.append(ctx.record(NAME, "no", q, ANSWERS[1].format(dx=name, neg=neg), label="no", fields=DX_FIELDS,
                              options=OPTIONS, answer_index=1))
    if not out:
        return ctx.skip(NAME, "dropped to keep yes/no balanced per diagnosis")
    return out


def asked_name(answer: str, answer_index: int) -> str:
    """The diagnosis a yes/no record asked about, read back from its answer."""
    body = answer.rsplit(". Answer:", 1)[0].removeprefix("The lesion looks like ")
    return body if answer_index == 0 else body.rsplit(", not ", 1)[1]
