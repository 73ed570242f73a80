"""Caption alignment (stage 1): the row's own caption, cut to the sentences the image can support.

Derm1M's captions are written by people (textbooks, papers, forums, video narration) and carry what
no photo shows: history, duration, treatment, causes, age, counts, forum talk, "this video".
Sentence by sentence (data_gen/sentences.py) such text is dropped and each dropped sentence is
counted under its reason in the synthesis report; the kept sentences, verbatim except for figure
marks like "(arrow)", are the answer. Captions composed from labels are not written text and give
nothing here: the synthetic world's and imported datasets' (source_type synthetic/dataset), and
Derm1M's `public` source ("This is a clinical skin image, diagnosed as warts molluscum and other
viral infections." for a herpes photo: a dataset's category, which the diagnosis families ask better).
"""
from __future__ import annotations

from data_gen.families.common import RowContext
from data_gen.sentences import FIGURE_MARKS, DiseaseNames, ends, split, unsupported

NAME = "caption"
CAPTION_TEXT = True  # the answer is caption text: the caption-only-word gate does not apply to it
QUESTIONS = ["Describe this image.", "What does this image show?", "Write a caption for this image.",
             "Describe what you see in this picture.", "Give a short description of this skin image."]
ANSWERS: list[str] = []
FIELDS = ["caption"]
TEMPLATED = {"source_type": {"synthetic", "dataset"}, "source": {"public"}}  # captions composed from labels
# Ontology groups that are ordinary words, not disease names ("a benign lesion", "viral").
GROUP_WORDS = {"benign", "malignant", "infectious", "non-infectious", "exogenous", "hereditary", "physical",
               "bacterial", "fungal", "viral", "parasitic", "melanocytic", "non-melanocytic", "inflammatory",
               "proliferations"}
_ONTOLOGY_NAMES: dict[int, DiseaseNames] = {}


def ontology_names(ontology) -> DiseaseNames:
    """The disease names of an ontology, less its group words (built once per ontology object)."""
    key = id(ontology)
    if key not in _ONTOLOGY_NAMES:
        _ONTOLOGY_NAMES[key] = DiseaseNames(n for n in ontology.all_names() if n not in GROUP_WORDS)
    return _ONTOLOGY_NAMES[key]


def judge(caption: str, names: DiseaseNames) -> list[tuple[str, str]]:
    """(sentence, reason) for every sentence of the caption, figure marks removed; reason "" = kept."""
    sentences = [FIGURE_MARKS.sub("", s) for s in split(caption)]
    out = []
    for i, s in enumerate(sentences):
        if i == len(sentences) - 1 and i > 0 and not ends(s):
            out.append((s, "cut-off sentence (no end mark)"))
        else:
            out.append((s, unsupported(s, names)))
    return out


def build(ctx: RowContext) -> list:
    for column, values in TEMPLATED.items():
        if getattr(ctx.row, column) in values:
            return ctx.skip(NAME, f"caption composed from labels ({column} {getattr(ctx.row, column)})", missing=True)
    judged = judge(ctx.row.caption, ontology_names(ctx.corpus.ontology))
    kept = [s if ends(s) else s + "." for s, why in judged if not why]
    for s, why in judged:
        if why:
            ctx.rejected.append((f"{NAME}: sentence dropped: {why}", repr(s[:100])))
    ctx.tally[f"{NAME} sentences: kept"] += len(kept)
    ctx.tally[f"{NAME} sentences: dropped"] += len(judged) - len(kept)
    if not kept:
        return ctx.skip(NAME, "no sentence the image can support")
    text = " ".join(kept)
    return [ctx.record(NAME, "caption", ctx.rng(NAME).choice(QUESTIONS), text, label=text, fields=FIELDS)]
