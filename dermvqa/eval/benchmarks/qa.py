"""Our own QA parquet (`dermvqa data synth` output): DIR/qa/*.parquet or parquet files in DIR, split `test`
unless the spec names another (`qa:DIR:val`, `:split=all`)."""
from __future__ import annotations

import json
from pathlib import Path

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
    base = path if path.is_dir() else path.parent
    if opts.get("root"):
        if not Path(opts["root"]).is_dir():
            raise BenchError(f"{path}: image folder root={opts['root']} not found")
        roots = [Path(opts["root"])]
    else:
        roots = _report_roots(qa_dir, base)
    find = ImageFinder(roots)
    cols = {name: records.column(name).to_pylist() for name in (
        "id", "image", "question", "answer", "answer_type", "options", "answer_index", "label", "family", "source",
        "ontology_path", "fitzpatrick", "split")}
    found = {image: find(image) for image in dict.fromkeys(cols["image"])}  # records share images ~6x
    items = [EvalItem(
        id=c["id"], images=[found[c["image"]]], question=c["question"], references=[c["answer"]],
        answer_type=c["answer_type"], options=list(c["options"] or []), answer_index=int(c["answer_index"]),
        label=c["label"] or "", family=c["family"], source=c["source"] or "",
        group=(c["ontology_path"] or [""])[0], fitzpatrick=int(c["fitzpatrick"] or 0), split=c["split"] or "",
    ) for c in (dict(zip(cols, row)) for row in zip(*cols.values()))]
    return Loaded(items, info={"split": split}, roots=roots)
