"""DermaVQA (MEDIQA-M3G 2024): `iiyi/{train,valid_ht,test_ht}.json` and `reddit/...`, images in
`images_{train,valid,test}/`.

An encounter has several images (shown as one grid), a query title and content and several responses, in
en/zh/es (`:lang=`, default en; `:lang=all` takes each language as its own item). Empty responses are left
out of the references and counted; encounters without query text or without any response are counted as
skipped. Reddit files are released without query text, which is an error here, not an empty benchmark.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from dermvqa.eval.benchmarks.common import BenchError, ImageFinder, Loaded, image_roots, read_json_list, wrong_kind
from dermvqa.eval.items import OPEN, EvalItem

LANGS = ("en", "zh", "es")
SPLITS = ("train", "valid", "test")


def _source_and_split(path: Path) -> tuple[str, str]:
    """iiyi/reddit from the folder or file name, train/valid/test from the file name."""
    names = f"{path.parent.name}/{path.name}".lower()
    source = next((s for s in ("iiyi", "reddit") if s in names), "")
    return source, next((s for s in SPLITS if s in path.name.lower()), "")


def load(path: Path, args: list[str], opts: dict) -> Loaded:
    lang = opts.get("lang", "en")
    if lang not in LANGS + ("all",):
        raise BenchError(f"dermavqa lang must be en, zh, es or all, got {lang!r}")
    langs = LANGS if lang == "all" else (lang,)
    entries = read_json_list(path, "dermavqa")
    if entries and "encounter_id" not in entries[0]:
        raise wrong_kind(path, "dermavqa", "entry 0 has no encounter_id")
    source, split = _source_and_split(path)
    if not any(e.get(f"query_{part}_{la}") for e in entries for part in ("title", "content") for la in langs):
        if source == "reddit":
            raise BenchError(f"{path}: reddit encounters are released without query text; fill in "
                             f"query_title/query_content with DermaVQA's reddit retrieval script first")
        raise BenchError(f"{path}: no encounter has {lang} query text")
    layout = [f"images_{split}", "images"] if split else ["images"]
    roots = image_roots(opts, path, layout)
    if not opts.get("root"):               # the image folders may sit beside the iiyi/ folder
        roots += [path.parent.parent / sub for sub in layout if (path.parent.parent / sub).is_dir()]
    find = ImageFinder(roots)
    items, skipped = [], Counter()
    for i, enc in enumerate(entries):
        if not enc.get("encounter_id") or not isinstance(enc.get("image_ids"), list) or not enc["image_ids"]:
            raise BenchError(f"{path}: entry {i} needs encounter_id and a non-empty image_ids list")
        for la in langs:
            question = "\n".join(t.strip() for t in (enc.get(f"query_title_{la}"), enc.get(f"query_content_{la}"))
                                 if t and t.strip())
            refs = [(r.get(f"content_{la}") or "").strip() for r in enc.get("responses", [])]
            if not question:
                skipped[f"no {la} query text (encounter)"] += 1
                continue
            if not any(refs):
                skipped[f"no {la} response (encounter)"] += 1
                continue
            if not all(refs):
                skipped[f"empty {la} response (reference left out, encounter kept)"] += refs.count("")
            items.append(EvalItem(id=enc["encounter_id"] + ("" if lang != "all" else f"-{la}"),
                                  images=[find(n) for n in enc["image_ids"]], question=question,
                                  references=[r for r in refs if r], answer_type=OPEN, family="dermavqa",
                                  source=source, split=split, lang=la))
    return Loaded(items, skipped, info={"source": source or "unknown", "file_split": split or "unknown",
                                        "lang": lang}, roots=roots)
