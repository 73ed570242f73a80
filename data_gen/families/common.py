"""What every QA family sees for one row (`RowContext`), and the helpers that build records from it."""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from data_gen.records import CLOSED, OPEN, QARecord
from data_gen.split import stable_int

if TYPE_CHECKING:
    from data_gen.corpus import Corpus
    from data_gen.derm1m import Row

LETTERS = "ABCDEFGH"
DX_FIELDS = ["disease_label", "hierarchical_disease_label"]


@dataclass
class RowPlan:
    """Choices made over the whole corpus so that they balance: filled in by data_gen/balance.py."""
    yes: bool = False                          # ask "is this <true diagnosis>?" (answer yes)
    negative: tuple[str, ...] | None = None    # ask "is this <negative>?" (answer no)
    mc_options: list[tuple[str, ...]] = field(default_factory=list)  # option paths, in letter order
    mc_index: int = -1


@dataclass
class RowContext:
    row: "Row"
    paths: tuple[tuple[str, ...], ...]   # resolved diagnoses (empty when none)
    corpus: "Corpus"
    plan: RowPlan
    split: str
    seed: int
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (reason, detail): family refused the row
    missing: list[str] = field(default_factory=list)  # families with nothing to ask (the field is empty)
    tally: Counter = field(default_factory=Counter)   # counts a family reports (caption sentences kept, ...)

    def rng(self, family: str) -> random.Random:
        return random.Random(stable_int(self.seed, self.row.filename, family))

    @property
    def single_diagnosis(self) -> tuple[str, ...] | None:
        if len(self.paths) == 1 and not self.corpus.ontology.is_grouping(self.paths[0]):
            return self.paths[0]
        return None

    def skip_without_single_diagnosis(self, family: str) -> list:
        """The skip for a family that needs exactly one diagnosis when the row has none, a group, or several."""
        if not self.paths:
            return self.skip(family, "no diagnosis", missing=True)
        return self.skip(family, "needs exactly one diagnosis (not a group, not several)", self.row.disease_label)

    def skip(self, family: str, reason: str, detail: str = "", missing: bool = False) -> list:
        """Record why a family made nothing for this row; `missing` = the field it needs is empty."""
        if missing:
            self.missing.append(f"{family}: {reason}")
        else:
            self.rejected.append((f"{family}: {reason}", detail))
        return []

    def record(self, family: str, variant: str, question: str, answer: str, *, label: str, fields: list[str],
               options: list[str] | None = None, answer_index: int = -1, path: tuple[str, ...] = ()) -> QARecord:
        rid = f"{stable_int('qa', self.seed, self.row.filename, family, variant):016x}"
        path = path or (self.paths[0] if len(self.paths) == 1 else common_prefix(self.paths))
        return QARecord(id=rid, image=self.row.filename, question=question, answer=answer, family=family,
                        answer_type=CLOSED if options else OPEN, options=list(options or []),
                        answer_index=answer_index if options else -1, label=label,
                        ontology_path=list(path),
                        source=self.row.source, source_type=self.row.source_type, split=self.split,
                        fields=fields, fitzpatrick=self.row.fitzpatrick)


def common_prefix(paths) -> tuple[str, ...]:
    out: list[str] = []
    for names in zip(*paths):
        if len(set(names)) != 1:
            break
        out.append(names[0])
    return tuple(out)


def lettered(options: list[str]) -> str:
    return " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def shuffled_with_answer(answer: str, wrong: list[str], rng: random.Random) -> tuple[list[str], int]:
    """Options in random order; the correct letter is uniform over the positions."""
    k = len(wrong) + 1
    index = rng.randrange(k)
    wrong = wrong[:]
    rng.shuffle(wrong)
    return wrong[:index] + [answer] + wrong[index:], index


def a_or_an(word: str) -> str:
    return "an" if re.match(r"[aeiou]", word.lower()) else "a"


def join_terms(terms: list[str]) -> str:
    return terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]
