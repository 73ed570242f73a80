"""Open diagnosis: "What is the diagnosis?" -> the diagnosis name exactly as the corpus spells it."""
from data_gen.families.common import DX_FIELDS, RowContext

NAME = "diagnosis"
QUESTIONS = [
    "What is the diagnosis?",
    "What skin condition is shown in this image?",
    "What is the most likely diagnosis for this lesion?",
    "Which skin disease does this image show?",
    "Name the condition seen in this photo.",
    "What condition does this skin image show?",
    "Identify the skin disease in this image.",
    "What would you diagnose from this image?",
]
ANSWERS = []


def build(ctx: RowContext) -> list:
    if not ctx.paths:
        return ctx.skip(NAME, "no diagnosis", missing=True)
    if any(ctx.corpus.ontology.is_grouping(p) for p in ctx.paths):
        return ctx.skip(NAME, "label is an ontology group, not a diagnosis", ctx.row.disease_label)
    if len(ctx.paths) == 1:
        name = ctx.corpus.dx_name(ctx.paths[0])
    else:
        name = ctx.row.disease_label.strip()  # several diagnoses: keep the label as written
    q = ctx.rng(NAME).choice(QUESTIONS)
    return [ctx.record(NAME, "open", q, name, label=name, fields=DX_FIELDS)]
