"""Caption report (stage-1 alignment): image -> a short description built only from what the image shows.

The Derm1M caption itself is never copied: it carries history, treatment and causes the pixels
cannot show. The report is composed from the visual concepts, a visible body site and the diagnosis.
"""
from data_gen.families.common import DX_FIELDS, RowContext, a_or_an, join_terms
from data_gen.families.visibility import visible_location

NAME = "caption_report"
QUESTIONS = ["Describe this skin image.", "Write a short report of this image.", "What does this image show?",
             "Give a brief dermatological description of this image.", "Describe the lesion in this photo."]
FINDINGS = ["Visible features: {c}.", "Features seen: {c}.", "Findings: {c}."]
SITES = ["Site: {loc}.", "It is on the {loc}.", "Location: {loc}."]
IMPRESSIONS = ["The appearance fits {dx}, {a} {group} condition.", "Impression: {dx} ({group}).",
               "This looks like {dx}, {a} {group} skin condition."]
# Top-level ontology groups as adjectives ("a proliferative condition").
GROUP_ADJECTIVE = {"Hair diseases": "hair", "Nail diseases": "nail", "proliferations": "proliferative",
                   "reaction patterns and descriptive terms": "reactive"}
ANSWERS = FINDINGS + SITES + IMPRESSIONS + list(GROUP_ADJECTIVE.values())


def build(ctx: RowContext) -> list:
    rng = ctx.rng(NAME)
    parts = []
    fields = []
    if ctx.row.concepts:
        parts.append(rng.choice(FINDINGS).format(c=join_terms(ctx.row.concepts)))
        fields.append("skin_concept")
    loc, _ = visible_location(ctx.row)
    if loc is not None:
        parts.append(rng.choice(SITES).format(loc=loc))
        fields.append("body_location")
    onto = ctx.corpus.ontology
    if ctx.paths and not any(onto.is_grouping(p) for p in ctx.paths):
        group = ctx.corpus.category_name(ctx.paths[0][:1])
        group = GROUP_ADJECTIVE.get(group, group)
        dx = " or ".join(ctx.corpus.dx_name(p) for p in ctx.paths)  # several: the image shows one of them
        parts.append(rng.choice(IMPRESSIONS).format(dx=dx, group=group, a=a_or_an(group)))
        fields += DX_FIELDS
    if not parts:
        return ctx.skip(NAME, "nothing visible to report")
    report = " ".join(parts)
    return [ctx.record(NAME, "report", rng.choice(QUESTIONS), report, label=report, fields=fields)]
