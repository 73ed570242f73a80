"""Zero-shot classification as DermLIP/Derm1M benchmark it, asked as multiple choice over a class list.

CSV columns: `image_path` (or `image`) and `label`, an integer indexing the class list (or a class name);
the linear-probe CSVs add `diag` (PAD's ACK/BCC/MEL/NEV/SCC/SEK, HAM's akiec/bcc/…, or names) and `split`
(test by default). The class list is PAD (6), HAM (7), F17K (114), DAFFODIL (5) or any list in the label-list
file (`lists=FILE`), or `classes=FILE` (one name per line, or a JSON list). An integer is only mapped
through a list the file itself cannot contradict: a `diag` column must name the same class on every row;
metrics.json records which list was used and whether it was confirmed.

Skin types (for the per-type strata) come from the CSV's own `fitzpatrick`, `fitzpatrick_scale` or
`fitspatrick` (PAD-UFES-20's spelling) column, else from `skin_types=FILE`: a metadata CSV joined by
image stem (PAD-UFES-20's metadata.csv: img_id + fitspatrick; Fitzpatrick17k's CSVs: md5hash +
fitzpatrick_scale); the loader info says how many items got a type. An image the CSV names that is not
there is looked for by stem directly under the image roots, whatever its extension (PAD-LP.csv names
`.png`, a converted copy holds `.jpg`); the loader info counts those.
"""
from __future__ import annotations

import json
from pathlib import Path

from dermvqa.eval.benchmarks.common import BenchError, ImageFinder, Loaded, fitzpatrick, image_roots, read_csv
from dermvqa.eval.items import CLOSED, EvalItem
from dermvqa.eval.parse import format_options

LABEL_LISTS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "derm1m" / "derived" / \
    "zero_shot_label_lists.json"
LIST_ALIASES = {"PAD": "PAD_CLASSNAMES", "HAM": "HAM_CLASSNAMES", "F17K": "F17K_DISEASE_113_CLASSES",
                "DAFFODIL": "DAFFODIL_5_CLASSNAMES"}
ABBREVIATIONS = {"ack": "actinic keratosis", "bcc": "basal cell carcinoma", "mel": "melanoma", "nev": "nevus",
                 "scc": "squamous cell carcinoma", "sek": "seborrheic keratosis", "akiec": "actinic keratosis",
                 "bkl": "benign keratosis", "df": "dermatofibroma", "nv": "nevus", "vasc": "vascular"}
QUESTION = "Which of the following skin diseases does this image show? {options}"
SKIN_TYPE_COLUMNS = ("fitzpatrick", "fitzpatrick_scale", "fitspatrick")
ID_COLUMNS = ("img_id", "md5hash", "image_id", "image_path", "image")


def _by_stem(roots: list[Path]) -> dict[str, Path]:
    """stem -> file, for the files directly under each root (the first root wins a shared stem)."""
    out: dict[str, Path] = {}
    for root in roots:
        for f in sorted(root.iterdir()):
            if f.is_file():
                out.setdefault(f.stem, f)
    return out


def skin_types_file(path: Path) -> dict[str, int]:
    """Image stem -> skin type (0 unknown) from a metadata CSV with an id column and a skin-type column."""
    rows = read_csv(path, "zeroshot", set())
    header = rows[0] if rows else {}
    id_col = next((c for c in ID_COLUMNS if c in header), None)
    type_col = next((c for c in SKIN_TYPE_COLUMNS if c in header), None)
    if id_col is None or type_col is None:
        raise BenchError(f"skin_types={path}: needs one of the columns {', '.join(ID_COLUMNS)} and one of "
                         f"{', '.join(SKIN_TYPE_COLUMNS)}; has {list(header)}")
    return {Path(r[id_col].strip()).stem: fitzpatrick(r[type_col], f"skin_types={path}: line {line}")
            for line, r in enumerate(rows, start=2)}


def label_list(name: str, lists_path: Path | None = None) -> list[str]:
    """A named class list from the label-list JSON (PAD, HAM, F17K, DAFFODIL or a key of the file)."""
    lists_path = Path(lists_path or LABEL_LISTS)
    if not lists_path.is_file():
        raise BenchError(f"label lists not found: {lists_path} (pass lists=PATH or classes=FILE in the bench spec)")
    lists = json.loads(lists_path.read_text())
    key = LIST_ALIASES.get(name.upper(), name)
    if key not in lists or not isinstance(lists[key], list):
        names = sorted(LIST_ALIASES) + sorted(k for k in lists if k.endswith("CLASSNAMES"))
        raise BenchError(f"unknown label list {name!r}; known: {', '.join(names)}")
    return lists[key]


def classes_file(path: Path) -> list[str]:
    """Class names from a text file (one per line) or a JSON list, in label-index order."""
    if not path.is_file():
        raise BenchError(f"classes={path}: file not found")
    text = path.read_text(encoding="utf-8")
    names = json.loads(text) if path.suffix.lower() == ".json" else [ln.strip() for ln in text.splitlines()]
    names = [n for n in names if isinstance(n, str) and n.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise BenchError(f"classes={path}: needs at least two distinct class names")
    return names


def _class_index(value: str, lookup: dict[str, int]) -> int | None:
    v = value.strip().lower()
    return lookup.get(v, lookup.get(ABBREVIATIONS.get(v, ""), None))


def load(path: Path, args: list[str], opts: dict) -> Loaded:
    if opts.get("classes"):
        labels, list_name = classes_file(Path(opts["classes"])), f"classes={opts['classes']}"
    elif args:
        labels, list_name = label_list(args[0], opts.get("lists")), args[0]
    else:
        raise BenchError("zeroshot spec needs a class list: zeroshot:CSV:LIST (PAD, HAM, F17K, DAFFODIL) "
                         "or zeroshot:CSV:classes=FILE")
    rows = read_csv(path, "zeroshot", {"label"})
    image_col = next((c for c in ("image_path", "image") if c in rows[0]), None) if rows else "image_path"
    if image_col is None:
        raise BenchError(f"{path}: no image_path (or image) column; has {list(rows[0])}")
    lookup = {lab.strip().lower(): i for i, lab in enumerate(labels)}
    roots = image_roots(opts, path, ["images"])
    find, stems, restemmed = ImageFinder(roots), None, 0
    question = QUESTION.format(options=format_options(labels))
    family = f"zeroshot_{(args[0] if args else 'classes').lower()}"
    type_col = next((c for c in SKIN_TYPE_COLUMNS if rows and c in rows[0]), None)
    joined = skin_types_file(Path(opts["skin_types"])) if opts.get("skin_types") and type_col is None else None
    items, integer_rows, confirmed_rows = [], 0, 0
    for line, row in enumerate(rows, start=2):
        where = f"{path}: line {line}"
        image = find(row[image_col])
        if not image.is_file():
            stems = _by_stem(roots) if stems is None else stems
            other = stems.get(Path(row[image_col].strip()).stem)
            image, restemmed = (other, restemmed + 1) if other else (image, restemmed)
        raw = (row["label"] or "").strip()
        if not (row[image_col] or "").strip() or not raw:
            raise BenchError(f"{where}: empty {image_col} or label")
        if raw.lstrip("-").isdigit():
            gold, integer_rows = int(raw), integer_rows + 1
            if not 0 <= gold < len(labels):
                raise BenchError(f"{where}: label {gold} out of range for class list {list_name} "
                                 f"({len(labels)} classes, 0-{len(labels) - 1})")
        else:
            gold = _class_index(raw, lookup)
            if gold is None:
                raise BenchError(f"{where}: class name {raw!r} is not in class list {list_name}")
        if (row.get("diag") or "").strip():
            named = _class_index(row["diag"], lookup)
            if named != gold:
                shown = labels[named] if named is not None else "no class of the list"
                raise BenchError(f"{where}: label {raw} is {labels[gold]!r} in class list {list_name} but diag "
                                 f"{row['diag']!r} is {shown}: the file numbers its classes in another order; "
                                 f"pass classes=FILE in the file's order")
            confirmed_rows += 1
        items.append(EvalItem(
            id=row.get("id") or f"{family}-{line}", images=[image], question=question,
            references=[labels[gold]], answer_type=CLOSED, options=labels, answer_index=gold, label=labels[gold],
            family=family, split=(row.get("split") or "").strip(),
            fitzpatrick=fitzpatrick(row[type_col], where) if type_col else
            (joined or {}).get(Path(row[image_col].strip()).stem, 0)))
    if not integer_rows:
        check = "labels are class names"
    elif confirmed_rows == len(rows):
        check = "integer labels confirmed by the diag column on every row"
    else:
        check = (f"{integer_rows} integer labels not confirmable (no diag column): read as indices into "
                 f"{list_name}, as DermLIP's zero-shot benchmark does")
    info = {"class_list": f"{list_name} ({len(labels)} classes: {', '.join(labels[:8])}"
                          f"{', …' if len(labels) > 8 else ''})", "label_check": check}
    if restemmed:
        info["images_found_by_stem"] = f"{restemmed} (named with another extension in {path.name})"
    if type_col or joined is not None:
        info["skin_types"] = (f"column {type_col}" if type_col else f"joined by image stem from {opts['skin_types']}") \
            + f": {sum(1 for it in items if it.fitzpatrick)} of {len(items)} items have a type"
    return Loaded(items, info=info, roots=roots, default_split="test" if "split" in (rows[0] if rows else {}) else None)
