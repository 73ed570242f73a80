"""Malignant, benign or non-neoplastic: the 3-way target a dataset states itself (Fitzpatrick17k's
three_partition_label), asked as a lettered choice; the answer names the diagnosis before the verdict."""
from data_gen.derm1m import THREE_PARTITION
from data_gen.families.common import RowContext, lettered, shuffled_with_answer

NAME = "neoplasm"
QUESTIONS = [
    "Is this lesion malignant, benign or non-neoplastic?",
    "Is this skin condition a malignant tumour, a benign one, or no neoplasm at all?",
    "Classify this condition: malignant, benign or non-neoplastic?",
]
ANSWERS = ["The lesion looks like {dx}, which is {verdict}. Answer: {verdict}."]
FIELDS = ["three_partition_label", "disease_label"]


def build(ctx: RowContext) -> list:
    verdict = ctx.row.three_partition
    if not verdict:
        return ctx.skip(NAME, "no malignant / benign / non-neoplastic label", missing=True)
    rng = ctx.rng(NAME)
    options, index = shuffled_with_answer(verdict, [v for v in THREE_PARTITION if v != verdict], rng)
    dx = ctx.single_diagnosis
    answer = ANSWERS[0].format(dx=ctx.corpus.dx_name(dx), verdict=verdict) if dx else f"Answer: {verdict}."
    return [ctx.record(NAME, "three_way", f"{rng.choice(QUESTIONS)} {lettered(options)}", answer, label=verdict,
                       fields=FIELDS, options=options, answer_index=index)]
