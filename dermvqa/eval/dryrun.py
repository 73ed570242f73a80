"""`dermvqa eval --bench SPEC --dry-run`: what a benchmark spec loads, without a model.

Counts items (and images) per split of the file, questions per answer type and language in the selected
split, the loader's skips with their reasons, and how many image files resolve under the dataset root.
"""
from __future__ import annotations

from collections import Counter

from dermvqa.eval.items import Bench


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k or '-'} {v:,}" for k, v in sorted(counter.items())) or "none"


def describe(bench: Bench) -> str:
    every = bench.items + bench.others
    split = bench.info.get("split", "as loaded")
    lines = [f"bench {bench.spec} ({bench.kind})",
             f"items per split in the file: {_counts(Counter(it.split for it in every))}",
             f"images per split in the file: "
             f"{_counts(Counter(s for s, _ in {(it.split, p) for it in every for p in it.images}))}",
             f"selected split {split}: {len(bench.items):,} items; by answer type: "
             f"{_counts(Counter(it.answer_type for it in bench.items))}; by language: "
             f"{_counts(Counter(it.lang for it in bench.items))}; by family: "
             f"{_counts(Counter(it.family for it in bench.items))}",
             "skipped by the loader: " + (_counts(Counter(bench.skipped)) if bench.skipped else "none")]
    for name, found in (("selected split", bench.items), ("whole file", every)):
        paths = {p for it in found for p in it.images}
        missing = sorted(str(p) for p in paths if not p.is_file())
        lines.append(f"image files, {name}: {len(paths) - len(missing):,} of {len(paths):,} found"
                     + (f" (first missing: {missing[0]})" if missing else ""))
        if not bench.others:
            break
    lines += [f"{k}: {v}" for k, v in bench.info.items() if k not in ("split", "items_per_split")]
    return "\n".join(lines)
