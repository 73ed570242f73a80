"""Our own QA parquet (`dermvqa data synth` output): DIR/qa/*.parquet or parquet files in DIR, split `test`
unless the spec names another (`qa:DIR:val`, `:split=all`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from dermvqa.eval.benchmarks.common import BenchError, ImageFinder, Loaded
from dermvqa.eval.items import EvalItem


def _report_roots(qa_dir: Path, base: Path) -> list[Path]:
    """Image roots named by the synthesis report (report.json's image_root / images), then base/images, base."""
    roots = []
    for report in (qa_dir / "report.json", base / "report.json"):
        if report.is_file():
            info = json.loads(report.read_text())
            for key in ("image_root", "images"):
                if isinstance(info.get(key), str):
                    r = Path(info[key])
                    roots.append(r if r.is_absolute() else report.parent / r)
    return [r for r in roots + [base / "images", base] if r.is_dir()] or [base]


def load(path: Path, args: list[str], opts: dict) -> Loaded:
    from data_gen.records import open_records

    split = opts.get("split") or (args[0] if args else "test")
    qa_dir = path / "qa" if (path / "qa").is_dir() else path
    records = open_records(qa_dir, split=None if split == "all" else split)  # memory-mapped, split chosen in Arrow
    if not len(records):
        raise BenchError(f"{qa_dir}: no QA records in split {split!r}")
    info = {"split": split, "items_in_split": len(records)}
    if opts.get("limit"):
        records = records.take(np.arange(min(int(opts["limit"]), len(records))))
    base = path if path.is_dir() else path.parent
    if opts.get("root"):
        if not Path(opts["root"]).is_dir():
            raise BenchError(f"{path}: image folder root={opts['root']} not found")
        roots = [Path(opts["root"])]
    else:
        roots = _report_roots(qa_dir, base)
    find = ImageFinder(roots)
    col = {name: records.column(name) for name in (
        "id", "image", "question", "answer", "answer_type", "options", "answer_index", "label", "family", "source",
        "fitzpatrick", "split")}
    group = pc.list_slice(records.column("ontology_path"), 0, 1)  # the ontology's top level, sliced in Arrow
    images = col.pop("image").to_pylist()
    found = {image: find(image) for image in dict.fromkeys(images)}  # records share images ~6x
    columns = [c.to_pylist() for c in col.values()]
    items = [EvalItem(id=i, images=[found[im]], question=q, references=[a], answer_type=t, options=o or [],
                      answer_index=ai, label=lab or "", family=f, source=src or "", group=g or "", fitzpatrick=fz or 0,
                      split=sp or "")
             for im, (i, q, a, t, o, ai, lab, f, src, fz, sp), (g, ) in zip(images, zip(*columns),
                                                                            (p or [""] for p in group.to_pylist()))]
    return Loaded(items, info=info, roots=roots)
