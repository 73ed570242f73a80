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
    from data_gen.records import read_records

    split = opts.get("split") or (args[0] if args else "test")
    qa_dir = path / "qa" if (path / "qa").is_dir() else path
    rows = read_records(qa_dir, split=None if split == "all" else split)
    if not rows:
        raise BenchError(f"{qa_dir}: no QA records in split {split!r}")
    base = path if path.is_dir() else path.parent
    if opts.get("root"):
        if not Path(opts["root"]).is_dir():
            raise BenchError(f"{path}: image folder root={opts['root']} not found")
        roots = [Path(opts["root"])]
    else:
        roots = _report_roots(qa_dir, base)
    find = ImageFinder(roots)
    items = [EvalItem(
        id=r["id"], images=[find(r["image"])], question=r["question"], references=[r["answer"]],
        answer_type=r["answer_type"], options=list(r["options"] or []), answer_index=int(r["answer_index"]),
        label=r["label"] or "", family=r["family"], source=r["source"] or "",
        group=(r["ontology_path"] or [""])[0], fitzpatrick=int(r["fitzpatrick"] or 0), split=r["split"] or "",
    ) for r in rows]
    return Loaded(items, info={"split": split}, roots=roots)
