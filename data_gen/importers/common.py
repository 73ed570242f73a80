"""Shared part of the dataset importers: checked rows in, a Derm1M-format CSV and an import report out.

Each importer reads its dataset's metadata into `Candidate`s (one per metadata row) naming a Derm1M
ontology node, the image file, the metadata facts and, where the dataset has one, its split. `finish`
checks every candidate (known label, image file present, id seen once), writes the kept rows as a CSV
that `dermvqa data synth` reads (Derm1M's columns plus `fitzpatrick`, `split` and the importer's extra
columns), the part of the Derm1M ontology those rows use (ontology.json, for `data synth --ontology`),
import_report.json / .md (rows per split and class, and per split and skin type) and skipped.csv, which
lists every skipped row with its reason. With `any_extension` an image is found by its stem when the
metadata's extension is not there (a converted copy: `.png` named, `.jpg` on disk). Under `strict` the
first bad row stops the import with an error naming the file, the row and the problem.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_gen.derm1m import COLUMNS
from data_gen.ontology import Ontology, sub_ontology
from atomic_files import write_text_atomic
from data_gen.split import assign_split, check_fractions

CSV_NAME = "derm1m.csv"
OUT_COLUMNS = list(COLUMNS) + ["fitzpatrick", "split", "source_id", "group_id"]
EXAMPLES = 5
SPLITS = {"train", "val", "test"}
STEM_NOTE = "images found by stem under another extension"


class ImportFailed(ValueError):
    """A bad row under --strict, or an input file that cannot be read at all; the message names it."""


@dataclass
class Candidate:
    row: int                      # 1-based data row in the metadata file (header excluded)
    id: str                       # the dataset's image id (must be unique)
    group: str                    # the lesion / patient id a fallback split keeps together
    code: str                     # the dataset's own label
    node: tuple[str, ...] | None  # the Derm1M ontology path it maps to (None: unknown label)
    label: str                    # the disease_label written (a name of that node the ontology resolves)
    image: str                    # file name relative to the image root ("" when none is known)
    caption: str = ""
    location: str = ""
    symptoms: list[str] = field(default_factory=list)
    age: str = ""
    sex: str = ""
    fitzpatrick: int = 0
    split: str = ""               # the dataset's own split, "" when it has none
    problem: str = ""             # a problem the importer found itself (e.g. not in the split file)
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # importer-specific columns written after OUT_COLUMNS


def read_table(path: Path, required: set[str]) -> list[dict]:
    """Rows of a metadata CSV as dicts of stripped strings; error naming the file and missing columns."""
    if not path.is_file():
        raise ImportFailed(f"{path}: metadata file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = sorted(required - set(reader.fieldnames or []))
        if missing:
            raise ImportFailed(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        return [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in reader]


def read_split_file(path: Path) -> dict[str, str]:
    """Image id (file name without extension) -> split, from a CSV with a `split` column (train / val /
    test) and an `image_id`, `img_id` or `image_path` column."""
    rows = read_table(path, {"split"})
    key = next((k for k in ("image_id", "img_id", "image_path") if rows and k in rows[0]), None)
    if key is None:
        raise ImportFailed(f"{path}: needs an image_id, img_id or image_path column beside split")
    out: dict[str, str] = {}
    for i, r in enumerate(rows, start=1):
        image_id = Path(r[key]).stem
        if r["split"] not in SPLITS:
            raise ImportFailed(f"{path}: data row {i} ({r[key]}): split {r['split']!r} is not one of {sorted(SPLITS)}")
        if image_id in out:
            raise ImportFailed(f"{path}: data row {i}: image {r[key]!r} listed twice")
        out[image_id] = r["split"]
    return out


def hierarchical(node: tuple[str, ...]) -> str:
    return ", ".join(node)


def check_mapping(mapping: dict[str, tuple[tuple[str, ...], str]], ontology: Ontology, source: str) -> None:
    """Every (node path, label) of an importer's table must resolve to that exact path in `ontology`."""
    for code, (node, label) in mapping.items():
        res = ontology.resolve(label, hierarchical(node))
        if res.problem or [tuple(p) for p in res.paths] != [node]:
            got = res.problem or " / ".join(" > ".join(p) for p in res.paths)
            raise ImportFailed(f"{source}: {code!r} -> {label!r} does not resolve to {' > '.join(node)} "
                               f"in {ontology.source} (got {got})")


def index_images(root: Path) -> dict[str, str]:
    """file name -> path relative to root, for every file under root (release folders nest images)."""
    if not root.is_dir():
        raise ImportFailed(f"{root}: image folder not found")
    found: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            found.setdefault(name, os.path.relpath(os.path.join(dirpath, name), root))
    return found


def by_stem(index: dict[str, str]) -> dict[str, str]:
    """file stem -> the file name `index` knows (the alphabetically first when two extensions share a stem)."""
    stems: dict[str, str] = {}
    for name in sorted(index):
        stems.setdefault(Path(name).stem, name)
    return stems


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _out_row(c: Candidate, source: str) -> dict:
    return {"filename": c.image, "caption": c.caption, "truncated_caption": c.caption, "source": source,
            "source_type": "dataset", "disease_label": c.label, "hierarchical_disease_label": hierarchical(c.node),
            "skin_concept": "No visual concepts", "body_location": c.location or "No body location information",
            "symptoms": ", ".join(c.symptoms) or "No symptom information", "age": c.age or "No age information",
            "gender": c.sex or "No gender information", "fitzpatrick": c.fitzpatrick or "", "split": c.split,
            "source_id": c.id, "group_id": c.group}


def _problem(c: Candidate, seen: set, index: dict, images: Path | None, any_extension: bool) -> tuple[str, str]:
    """(reason, detail) why candidate `c` cannot be imported; ("", "") when it can."""
    if c.id in seen:
        return "duplicate image id", c.id
    if c.problem:
        return c.problem, c.detail
    if c.node is None:
        return "unknown label", repr(c.code)
    if not c.image or c.image not in index:
        name = f"{Path(c.image).stem}.* (no file of that stem)" if any_extension and c.image else c.image
        return "image file missing", str((images or Path("?")) / (name or f"{c.id}.*"))
    return "", ""


def _find_by_stem(c: Candidate, index: dict, stems: dict) -> bool:
    """Point `c.image` at the file with its stem under another extension; True when one was found."""
    name = stems.get(Path(c.image).stem) if c.image and c.image not in index else None
    if name is None:
        return False
    c.image = name
    return True


def finish(candidates: list[Candidate], *, dataset: str, metadata: Path, images: Path | None, out: Path,
           mapping_doc: dict[str, str], strict: bool = False,
           seed: int = 0, test_fraction: float = 0.2, notes: dict[str, int | str] | None = None,
           val_fraction: float = 0.0, any_extension: bool = False) -> dict:
    """Check, split, write OUT/derm1m.csv + reports; return the report dict. See the module docstring."""
    check_fractions(test_fraction, val_fraction)
    index = index_images(images) if images is not None else {}
    stems = by_stem(index) if any_extension else {}
    notes = dict(notes or {})
    split_given = any(c.split for c in candidates)
    kept, skipped, seen = [], [], set()
    for c in tqdm(candidates, desc=f"import {dataset}", unit="row"):
        other_extension = any_extension and _find_by_stem(c, index, stems)
        problem, detail = _problem(c, seen, index, images, any_extension)
        seen.add(c.id)
        if problem:
            if strict:
                raise ImportFailed(f"{metadata}: data row {c.row} ({c.id}): {problem}: {detail}")
            skipped.append({"row": c.row, "id": c.id, "reason": problem, "detail": detail})
            continue
        c.image = index[c.image]
        if other_extension:
            notes[STEM_NOTE] = notes.get(STEM_NOTE, 0) + 1
        c.split = c.split or assign_split(c.group or c.id, seed, test_fraction, val_fraction)
        kept.append(c)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{**_out_row(c, dataset), **c.extra} for c in kept]
    extra_columns = list(dict.fromkeys(k for c in kept for k in c.extra))
    write_text_atomic(out / CSV_NAME, _csv_text(rows, OUT_COLUMNS + extra_columns))
    write_text_atomic(out / "skipped.csv", _csv_text(skipped, ["row", "id", "reason", "detail"]))
    write_text_atomic(out / "ontology.json", json.dumps(sub_ontology(sorted({c.node for c in kept})), indent=1))
    reasons: dict[str, dict] = defaultdict(lambda: {"count": 0, "examples": []})
    for s in skipped:
        r = reasons[s["reason"]]
        r["count"] += 1
        if len(r["examples"]) < EXAMPLES:
            r["examples"].append(f"row {s['row']} {s['id']}: {s['detail']}")
    by_split = Counter(c.split for c in kept)
    report = {"dataset": dataset, "metadata": str(metadata), "images": str(images) if images else None,
              "csv": str(out / CSV_NAME), "rows_read": len(candidates), "rows_written": len(kept),
              "rows_skipped": len(skipped), "skipped": dict(sorted(reasons.items())), "notes": notes,
              "split_source": "dataset" if split_given else f"by group id (seed {seed}, "
              f"test fraction {test_fraction}, val fraction {val_fraction})",
              "splits": dict(sorted(by_split.items())),
              "classes": {code: dict(sorted(Counter(c.split for c in kept if c.code == code).items()))
                          for code in sorted({c.code for c in kept})},
              "fitzpatrick": dict(sorted(Counter(skin_type(c) for c in kept).items())),
              "fitzpatrick_by_split": {s: dict(sorted(Counter(skin_type(c) for c in kept if c.split == s).items()))
                                       for s in sorted(by_split)},
              "mapping": mapping_doc}
    write_text_atomic(out / "import_report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(out / "import_report.md", _markdown(report))
    why = ", ".join(f"{k}: {v['count']}" for k, v in report["skipped"].items()) or "none"
    print(f"[data import {dataset}] {len(candidates)} rows read, {len(kept)} written to {out / CSV_NAME} "
          f"(splits {dict(by_split)}), {len(skipped)} skipped ({why}); report at {out / 'import_report.md'}")
    return report


def skin_type(c: Candidate) -> str:
    return str(c.fitzpatrick or "unknown")


def _skin_type_table(r: dict) -> list[str]:
    types = sorted({t for counts in r["fitzpatrick_by_split"].values() for t in counts})
    lines = ["| split | " + " | ".join(types) + " | all |", "|---|" + "---|" * (len(types) + 1)]
    lines += [f"| {s} | " + " | ".join(str(n.get(t, 0)) for t in types) + f" | {sum(n.values())} |"
              for s, n in r["fitzpatrick_by_split"].items()]
    return lines + ["| all | " + " | ".join(str(r["fitzpatrick"].get(t, 0)) for t in types)
                    + f" | {r['rows_written']} |"]


def _markdown(r: dict) -> str:
    lines = [f"# Import report: {r['dataset']}", "",
             f"Metadata `{r['metadata']}`, images `{r['images']}`. Rows read {r['rows_read']}, written "
             f"{r['rows_written']} to `{r['csv']}`, skipped {r['rows_skipped']} (every one in skipped.csv).",
             f"Split: {r['split_source']}.", "", "## Label mapping (dataset label -> Derm1M ontology node)", "",
             "| label | node |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["mapping"].items()]
    lines += ["", "## Rows per split", "", "| label | " + " | ".join(r["splits"]) + " |",
              "|---|" + "---|" * len(r["splits"])]
    lines += [f"| {code} | " + " | ".join(str(n.get(s, 0)) for s in r["splits"]) + " |"
              for code, n in r["classes"].items()]
    lines += ["", "## Skipped rows (reason: count; first examples)", "", "| reason | count | examples |",
              "|---|---|---|"]
    lines += [f"| {k} | {v['count']} | {'; '.join(v['examples'])} |" for k, v in r["skipped"].items()]
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"- {k}: {v}" for k, v in r["notes"].items()]
    lines += ["", "## Fitzpatrick skin type (rows per split and type)", "", *_skin_type_table(r)]
    return "\n".join(lines) + "\n"
