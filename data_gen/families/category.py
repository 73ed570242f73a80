"""Category at each ontology level: which group, benign or malignant, infectious or not, which pathogen class.

Options are the node and its siblings that occur as ancestors of corpus diagnoses.
"""
from data_gen.families.common import DX_FIELDS, RowContext, common_prefix, lettered, shuffled_with_answer

NAME = "category"
LEVEL_QUESTIONS = {
    1: ["Which group of skin disorders does this condition belong to?",
        "To which broad category of skin disease does this belong?",
        "Which family of skin conditions is this?"],
    "benign": ["Does this lesion look benign or malignant?", "Is this growth benign or malignant?"],
    "infectious": ["Is this condition infectious or non-infectious?", "Is this skin disease caused by an infection?"],
    "pathogen": ["What kind of infection is this?", "Which type of organism causes this condition?"],
    "melanocytic": ["Is this lesion melanocytic or non-melanocytic?"],
    "other": ["Which category does this condition fall under?", "Which subgroup of skin disease is this?"],
}
QUESTIONS = [q for qs in LEVEL_QUESTIONS.values() for q in qs]
ANSWERS = []


def _kind(node: tuple) -> object:
    name = node[-1]
    if len(node) == 1:
        return 1
    if name in ("benign", "malignant"):
        return "benign"
    if name in ("infectious", "non-infectious"):
        return "infectious"
    if node[-2] == "infectious":
        return "pathogen"
    if name in ("melanocytic", "non-melanocytic"):
        return "melanocytic"
    return "other"


def _levels(corpus, path: tuple) -> list[tuple[int, tuple, str, list[str]]]:
    """(depth, node, answer, wrong names) for each grouping level of `path` with a corpus alternative."""
    onto, out = corpus.ontology, []
    for depth in range(1, len(path) + 1):
        node = path[:depth]
        if not onto.is_grouping(node):
            continue
        parent = node[:-1]
        siblings = [p for p in (onto.children[parent] if parent else onto.top) if p != node and p in corpus.categories]
        if siblings:
            out.append((depth, node, corpus.category_name(node), [corpus.category_name(p) for p in siblings]))
    return out


def build(ctx: RowContext) -> list:
    if not ctx.paths:
        return ctx.skip(NAME, "no diagnosis", missing=True)
    path = ctx.paths[0] if len(ctx.paths) == 1 else common_prefix(ctx.paths)
    memo = ctx.corpus.memo.setdefault(NAME, {})
    if path not in memo:
        memo[path] = _levels(ctx.corpus, path)
    rng = ctx.rng(NAME)
    out = []
    for depth, node, answer, wrong in memo[path]:
        options, index = shuffled_with_answer(answer, rng.sample(wrong, min(3, len(wrong))), rng)
        q = f"{rng.choice(LEVEL_QUESTIONS[_kind(node)])} {lettered(options)}"
        out.append(ctx.record(NAME, f"level{depth}", q, answer, label=answer, fields=DX_FIELDS,
                              options=options, answer_index=index, path=node))
    if not out:
        return ctx.skip(NAME, "no level with a corpus alternative")
    return out
