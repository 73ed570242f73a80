"""Visual-concept vocabulary: terms seen in `skin_concept`, synonym groups, and which terms overlap.

A morphology distractor must be a term that is surely *not* another name for something the image
shows: "erythema" is no distractor for an image tagged "red". Two terms overlap when they share a
group: one of the hand-made groups below, or one ConceptTerms.json entry (key + synonyms).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

# Terms that describe the same visible property (colour family, elevation, surface, fluid, ...).
OVERLAPPING_TERMS = [
    {"red", "erythema", "erythematous", "redness", "pink", "salmon", "inflamed", "purple", "violaceous"},
    {"brown", "brown(hyperpigmentation)", "hyperpigmentation", "hyperpigmented", "pigmented", "pigmentation",
     "black", "dark", "gray", "grey", "blue", "pigment network", "dots and globules", "blue whitish veil"},
    {"white", "white(hypopigmentation)", "hypopigmentation", "hypopigmented", "depigmentation", "depigmented"},
    {"scale", "scaly", "scaling", "desquamation", "desquamative", "xerosis", "dry", "rough", "flaky",
     "fissure", "keratotic", "hyperkeratosis"},
    {"crust", "crusted", "crusting", "dried crust"},
    {"raised", "elevated", "papule", "nodule", "plaque", "dome-shaped", "wheal", "induration",
     "exophytic/fungating", "warty/papillomatous", "verrucous", "pedunculated", "acuminate", "cyst",
     "abscess", "flat topped"},
    {"flat", "macule", "patch"},
    {"vesicle", "bulla", "blister", "pustule", "exudate", "pus"},
    {"ulcer", "ulceration", "erosion", "erosive", "excoriation", "fissure"},
    {"telangiectasia", "purpura/petechiae", "purple", "vascular structures"},
    {"atrophy", "atrophic", "scar", "sclerosis", "striae"},
    {"round", "oval", "circular", "annular", "ring"},
    {"smooth", "shiny", "translucent"},
    {"diffuse", "widespread", "generalized"},
]


def load_concept_terms(path: str | Path) -> list[set[str]]:
    """ConceptTerms.json ({key: [synonyms]}) as a list of lower-cased groups."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [{key.lower(), *(t.lower() for t in terms)} for key, terms in data.items()]


class ConceptVocab:
    """Counts of concept terms in a corpus plus the overlap relation between terms."""

    def __init__(self, counts: Counter | None = None, synonym_groups: list[set[str]] | None = None):
        self.counts: Counter = counts if counts is not None else Counter()
        self._pools: dict[tuple, list[str]] = {}  # distractor pools by present terms (counts are final by then)
        self._overlap_cache: dict[str, set[str]] = {}
        self._groups: dict[str, set[int]] = {}
        for gid, group in enumerate(OVERLAPPING_TERMS + (synonym_groups or [])):
            for term in group:
                self._groups.setdefault(term, set()).add(gid)

    def add(self, terms: list[str]) -> None:
        self.counts.update(terms)

    def overlaps(self, a: str, b: str) -> bool:
        return a == b or bool(self._groups.get(a, set()) & self._groups.get(b, set()))

    def _overlapping(self, term: str) -> set[str]:
        """Corpus terms overlapping `term` (cached; the counts are final once distractors are drawn)."""
        if term not in self._overlap_cache:
            self._overlap_cache[term] = {t for t in self.counts if self.overlaps(term, t)} | {term}
        return self._overlap_cache[term]

    def distractors(self, present: list[str], k: int, rng) -> list[str]:
        """Up to k corpus terms that overlap none of `present`, drawn with probability proportional
        to corpus frequency, so a common term is offered as a wrong option about as often as it is
        the right one (a blind model gains little by always picking the commonest term)."""
        key = tuple(sorted(present))
        if key not in self._pools:
            banned = set().union(*(self._overlapping(p) for p in present))
            self._pools[key] = [t for t in sorted(self.counts) if t not in banned]
        pool = list(self._pools[key])
        chosen: list[str] = []
        weights = [self.counts[t] for t in pool]
        while pool and len(chosen) < k:
            t = rng.choices(pool, weights=weights)[0]
            i = pool.index(t)
            chosen.append(t)
            del pool[i], weights[i]
            near = self._overlapping(t)
            keep = [j for j, u in enumerate(pool) if u not in near]
            pool, weights = [pool[j] for j in keep], [weights[j] for j in keep]
        return chosen
