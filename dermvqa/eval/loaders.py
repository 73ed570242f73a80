"""`load_bench(spec)`: read a benchmark as its authors release it (one module per format in
dermvqa/eval/benchmarks/), select the split, and check that its images are there.

Image paths are resolved in the format's official layout under root= (default: the file's folder); when
none of them is found the image folder is missing, which is an error (`strict=False` reports it instead,
for --dry-run). Single missing images are left to the runner, which reports them by id.
"""
from __future__ import annotations

from collections import Counter

from dermvqa.eval.benchmarks import dermavqa, ham10000, mmskin, qa, radiology, zeroshot
from dermvqa.eval.benchmarks.common import BenchError
from dermvqa.eval.items import CLOSED, Bench, parse_spec

LOADERS = {"qa": qa.load, "mmskin": mmskin.load, "dermavqa": dermavqa.load, "slake": radiology.load_slake,
           "vqarad": radiology.load_vqarad, "zeroshot": zeroshot.load, "ham10000": ham10000.load}


def load_bench(spec: str, strict: bool = True, limit: int | None = None) -> Bench:
    """The benchmark a SPEC names. `limit`: only the first N items of our own QA records are built (a corpus of
    millions opens in seconds); the other kinds are small and always load whole before the runner cuts them."""
    s = parse_spec(spec)
    if not s.path.exists():
        raise BenchError(f"bench {spec!r}: {s.path} does not exist")
    loaded = LOADERS[s.kind](s.path, s.args, s.opts | ({"limit": str(limit)} if limit and s.kind == "qa" else {}))
    if not loaded.items:
        raise BenchError(f"{s.path}: no benchmark items")
    split = s.opts.get("split") or loaded.default_split
    info = dict(loaded.info)
    items, others = loaded.items, []
    if split and s.kind != "qa":
        in_file = Counter(it.split for it in loaded.items)
        info["split"], info["items_per_split"] = split, dict(sorted(in_file.items()))
        if split != "all":
            if split not in in_file:
                raise BenchError(f"{s.path}: no items in split {split!r}; the file has {', '.join(sorted(in_file))}")
            items = [it for it in loaded.items if it.split == split]
            others = [it for it in loaded.items if it.split != split]
    counts = Counter(it.id for it in items)
    if len(counts) != len(items):
        dup = sorted(x for x, n in counts.items() if n > 1)[:5]
        raise BenchError(f"{s.path}: duplicate item ids, e.g. {dup}")
    exact = sum(1 for it in items if it.answer_type == CLOSED and not it.options)
    if exact:
        info["closed_without_named_choices"] = f"{exact} (scored by normalised exact match)"
    if not any(p.is_file() for it in items for p in it.images):
        looked = ", ".join(str(r) for r in loaded.roots)
        message = f"{s.path}: image folder missing: none of the images found (looked in {looked}); pass :root=DIR"
        if strict:
            raise BenchError(message)
        info["images"] = message
    return Bench(s.kind, spec, items, dict(sorted(loaded.skipped.items())), info, others)
