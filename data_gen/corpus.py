"""What the whole input corpus contains: its diagnoses, categories, concepts, body locations, visible signs.

Distractors and negatives are drawn only from here: a name the model never sees with an image
would let a blind model spot the wrong option by its novelty.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from data_gen.concepts import ConceptVocab
from data_gen.derm1m import Row
from data_gen.ontology import Ontology, Path_, norm
from data_gen.ontology import display as node_display

# Symptoms a photograph can show; the rest (tender, itch, pain, increasing size, ...) it cannot.
VISIBLE_SYMPTOMS = {"bleeding", "crusting", "oozing", "discharge", "swelling", "blistering", "scaling",
                    "peeling", "ulceration", "pus", "weeping"}
# Body regions and the parts inside them: a part is no distractor for its region and vice versa.
BODY_REGIONS = [
    {"face", "nose", "cheek", "lips", "lip", "ear", "forehead", "chin", "eyelid", "periorbital", "oral", "mouth"},
    {"head", "scalp", "face", "neck"},
    {"hand", "finger", "palm", "nail", "wrist"},
    {"foot", "toe", "sole", "heel", "ankle"},
    {"leg", "thigh", "knee", "shin", "calf", "lower limb"},
    {"arm", "forearm", "elbow", "upper arm", "axilla", "upper limb", "wrist"},
    {"trunk", "abdomen", "back", "chest", "torso", "waist", "flank", "breast", "buttock", "groin"},
    {"genital", "genitals", "groin", "penis", "vulva", "scrotum", "anus", "perianal", "buttock"},
]


class Corpus:
    def __init__(self, ontology: Ontology, concepts: ConceptVocab):
        self.ontology = ontology
        self.concepts = concepts
        self.locations: Counter = Counter()
        self.signs: Counter = Counter()
        self.dx_counts: Counter = Counter()
        self._spellings: dict[Path_, Counter] = defaultdict(Counter)
        self._effective: dict[Path_, tuple[str, ...]] = {}
        self.categories: set[Path_] = set()
        self.display: dict[Path_, str] = {}
        self.memo: dict[str, dict] = {}  # per-family caches, filled once the corpus is final

    def observe(self, row: Row, paths: tuple[Path_, ...], hier_nodes: tuple[str, ...]) -> None:
        """Add one accepted row."""
        self.concepts.add(row.concepts)
        self.locations.update(row.locations)
        self.signs.update(s for s in row.symptoms if s in VISIBLE_SYMPTOMS)
        for p in paths:
            self.categories.update(p[:i] for i in range(1, len(p) + 1) if self.ontology.is_grouping(p[:i]))
        if len(paths) == 1 and not self.ontology.is_grouping(paths[0]):
            p = paths[0]
            self.dx_counts[p] += 1
            self._spellings[p][row.disease_label] += 1
            self._keep_effective(p, self._effective_path(p, hier_nodes))

    def _keep_effective(self, p: Path_, eff: tuple[str, ...]) -> None:
        old = self._effective.get(p)
        if old is None or (len(eff), old) > (len(old), eff):  # longest wins, ties by name: order-free
            self._effective[p] = eff

    def _effective_path(self, p: Path_, hier_nodes: tuple[str, ...]) -> tuple[str, ...]:
        """The ontology path, lengthened by extra known nodes the row's hierarchical label puts above
        the diagnosis (Derm1M files "allergic contact dermatitis" under "contact dermatitis", a
        sibling in ontology.json): such a pair must never serve as each other's negative."""
        names = [norm(n) for n in p]
        hier = list(hier_nodes)
        if not hier or hier[-1] != names[-1]:
            return tuple(names)
        it = iter(hier)
        if all(any(h == n for h in it) for n in names):  # ontology path is a subsequence of hier
            return tuple(dict.fromkeys(hier))
        return tuple(names)

    def state(self) -> dict:
        """The counts gathered so far, small and picklable (for merging scans done in parallel)."""
        return {"concepts": self.concepts.counts, "locations": self.locations, "signs": self.signs,
                "dx_counts": self.dx_counts, "spellings": dict(self._spellings), "effective": self._effective,
                "categories": self.categories}

    def absorb(self, state: dict) -> None:
        self.concepts.counts.update(state["concepts"])
        self.locations.update(state["locations"])
        self.signs.update(state["signs"])
        self.dx_counts.update(state["dx_counts"])
        for p, c in state["spellings"].items():
            self._spellings[p].update(c)
        for p, eff in state["effective"].items():
            self._keep_effective(p, eff)
        self.categories.update(state["categories"])

    def finalize(self) -> "Corpus":
        for p, spellings in self._spellings.items():
            best = max(spellings.values())
            self.display[p] = min(s for s, c in spellings.items() if c == best)
        return self

    # ---- relations used by distractors and negatives --------------------------------------------
    def effective(self, p: Path_) -> tuple[str, ...]:
        return self._effective.get(p) or tuple(norm(n) for n in p)

    def related(self, a: Path_, b: Path_) -> bool:
        if self.ontology.related(a, b):
            return True
        ea, eb = self.effective(a), self.effective(b)
        n = min(len(ea), len(eb))
        return ea[:n] == eb[:n] or ea[-1] in eb or eb[-1] in ea

    def diagnoses(self) -> list[Path_]:
        """Corpus diagnoses in ontology depth-first order, so neighbours are siblings and cousins."""
        return sorted(self.dx_counts, key=self.ontology.order.__getitem__)

    def category_name(self, p: Path_) -> str:
        return node_display(p[-1])

    def dx_name(self, p: Path_) -> str:
        return self.display.get(p) or node_display(p[-1])

    @staticmethod
    def locations_overlap(a: str, b: str) -> bool:
        return a == b or any(a in g and b in g for g in BODY_REGIONS)
