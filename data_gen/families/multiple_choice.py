"""Multiple choice over neighbouring corpus diagnoses; the answer is the correct option's text."""
from data_gen.families.common import DX_FIELDS, RowContext, lettered

NAME = "multiple_choice"
QUESTIONS = [
    "Which diagnosis fits best?",
    "Which of these conditions is shown?",
    "Choose the most likely diagnosis.",
    "Which of the following skin diseases does this image show?",
    "Pick the diagnosis that matches this lesion.",
    "What is the diagnosis? Choose one.",
]
ANSWERS = []


def build(ctx: RowContext) -> list:
    dx = ctx.single_diagnosis
    if dx is None:
        return ctx.skip_without_single_diagnosis(NAME)
    if not ctx.plan.mc_options:
        return ctx.skip(NAME, "fewer than two unrelated diagnoses in the corpus")
    options = [ctx.corpus.dx_name(p) for p in ctx.plan.mc_options]
    q = f"{ctx.rng(NAME).choice(QUESTIONS)} {lettered(options)}"
    answer = options[ctx.plan.mc_index]
    return [ctx.record(NAME, "mc", q, answer, label=answer, fields=DX_FIELDS, options=options,
                       answer_index=ctx.plan.mc_index)]
