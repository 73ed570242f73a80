"""The benchmark item every loader produces and the runner scores, plus the bench SPEC grammar."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CLOSED, OPEN = "closed", "open"
KINDS = ("qa", "mmskin", "dermavqa", "slake", "vqarad", "zeroshot", "ham10000")


@dataclass
class EvalItem:
    id: str
    images: list[Path]           # one or more; several images are shown to the model as one grid
    question: str
    references: list[str]        # reference answers as full text (several for DermaVQA)
    answer_type: str             # closed | open
    options: list[str] = field(default_factory=list)
    answer_index: int = -1       # into options; -1 for open or option-less closed questions
    label: str = ""              # short gold answer (diagnosis name, "yes", option text)
    family: str = ""
    source: str = ""
    group: str = ""              # ontology top-level group
    fitzpatrick: int = 0         # 1-6, 0 = unknown
    split: str = ""              # the benchmark's own split (train / val / test ...), "" when it has none
    lang: str = ""               # question language when the benchmark has several (en / zh / es)

    @property
    def gold(self) -> str:
        """The short answer that closed accuracy and open exact match compare against."""
        if self.options and self.answer_index >= 0:
            return self.options[self.answer_index]
        return self.label or (self.references[0] if self.references else "")


@dataclass
class Bench:
    kind: str
    spec: str
    items: list[EvalItem]                                    # the selected split
    skipped: dict[str, int] = field(default_factory=dict)   # loader-level exclusions: reason -> count
    info: dict = field(default_factory=dict)                 # what the loader decided: split, class list, image folder
    others: list[EvalItem] = field(default_factory=list)     # items of the splits not selected (for --dry-run)


@dataclass
class Spec:
    kind: str
    path: Path
    args: list[str]              # positional extras: qa split, zeroshot list name
    opts: dict[str, str]         # key=value extras: root=, lang=, classes=, split=


def parse_spec(spec: str) -> Spec:
    """`KIND:PATH[:ARG...][:key=value...]`, e.g. `qa:data/world:test`, `zeroshot:pad.csv:PAD:root=imgs`."""
    parts = spec.split(":")
    if len(parts) < 2 or parts[0] not in KINDS or not parts[1]:
        raise ValueError(f"bad bench spec {spec!r}: expected KIND:PATH[:...] with KIND one of {', '.join(KINDS)}")
    args, opts = [], {}
    for p in parts[2:]:
        if "=" in p:
            k, v = p.split("=", 1)
            opts[k] = v
        elif p:
            args.append(p)
    return Spec(parts[0], Path(parts[1]), args, opts)
