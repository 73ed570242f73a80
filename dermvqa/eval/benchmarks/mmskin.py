"""MM-Skin test CSV (`MM-Skin_test.csv`: image,question,answer; image paths begin with `dataset/`).

Answers that open with "Yes"/"No" are closed questions scored on that verdict (the full answer stays the
reference); the rest are open free text. Images resolve under root= (default: the CSV's folder) with or
without the `dataset/` folder.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from dermvqa.eval.benchmarks.common import BenchError, ImageFinder, Loaded, image_roots, read_csv
from dermvqa.eval.items import CLOSED, OPEN, EvalItem

_VERDICT = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def load(path: Path, args: list[str], opts: dict) -> Loaded:
    rows = read_csv(path, "mmskin", {"image", "question", "answer"})
    roots = image_roots(opts, path, ["dataset"])
    find = ImageFinder(roots)
    items, skipped = [], Counter()
    for line, row in enumerate(rows, start=2):
        where = f"{path}: line {line}"
        if not (row["image"] or "").strip() or not (row["question"] or "").strip():
            raise BenchError(f"{where}: empty image or question")
        answer = (row["answer"] or "").strip()
        if not answer:
            skipped["empty answer"] += 1
            continue
        common = dict(id=row.get("id") or f"mmskin-{line}", images=[find(row["image"])], question=row["question"],
                      references=[answer])
        verdict = _VERDICT.match(answer)
        if verdict:
            options = ["yes", "no"]
            items.append(EvalItem(**common, answer_type=CLOSED, options=options,
                                  answer_index=options.index(verdict.group(1).lower()),
                                  label=verdict.group(1).lower(), family="mmskin_yes_no"))
        else:
            items.append(EvalItem(**common, answer_type=OPEN, family="mmskin_open"))
    return Loaded(items, skipped, roots=roots)
