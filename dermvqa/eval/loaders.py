"""One loader per benchmark format, each turning a file into EvalItems; `load_bench(spec)` dispatches.

Image paths are resolved here but not checked: the runner reports missing images by id.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from dermvqa.eval.items import CLOSED, OPEN, Bench, EvalItem, parse_spec
from dermvqa.eval.parse import format_options

LABEL_LISTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "derm1m" / "derived" / \
    "zero_shot_label_lists.json"
LIST_ALIASES = {"PAD": "PAD_CLASSNAMES", "HAM": "HAM_CLASSNAMES", "F17K": "F17K_DISEASE_113_CLASSES",
                "DAFFODIL": "DAFFODIL_5_CLASSNAMES"}
ZEROSHOT_QUESTION = "Which of the following skin diseases does this image show? {options}"


def _read_csv(path: Path, required: set[str]) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"benchmark CSV not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; has {reader.fieldnames}")
        rows = list(reader)
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        empty = sorted(c for c in required if not (row[c] or "").strip())
        if empty:
            raise ValueError(f"{path}: line {i} has empty {empty}")
    return rows


def _read_json_list(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"benchmark JSON not found: {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _fitzpatrick(value, where: str) -> int:
    """Skin type 1-6; empty, 0 and -1 (Fitzpatrick17k's 'unknown') map to 0."""
    if value in (None, ""):
        return 0
    try:
        v = int(float(value))
    except ValueError:
        raise ValueError(f"{where}: fitzpatrick value {value!r} is not a number") from None
    if v in (0, -1):
        return 0
    if not 1 <= v <= 6:
        raise ValueError(f"{where}: fitzpatrick value {v} outside 1-6")
    return v


def _image_roots(qa_dir: Path, base: Path, explicit: str | None) -> list[Path]:
    """Candidate roots for QA image paths, most specific first (an explicit root= wins alone)."""
    if explicit:
        return [Path(explicit)]
    roots = []
    for report in (qa_dir / "report.json", base / "report.json"):
        if report.is_file():
            info = json.loads(report.read_text())
            for key in ("image_root", "images"):
                if isinstance(info.get(key), str):
                    r = Path(info[key])
                    roots.append(r if r.is_absolute() else report.parent / r)
    return roots + [base / "images", base]


def _resolve(rel: str, roots: list[Path]) -> Path:
    for root in roots:
        if (root / rel).exists():
            return root / rel
    return roots[0] / rel


def load_qa(path: Path, args: list[str], opts: dict) -> tuple[list[EvalItem], dict]:
    """Our own QA parquet: DIR/qa/*.parquet (or parquet files in DIR), default split `test`."""
    from data_gen.records import read_records

    split = opts.get("split") or (args[0] if args else "test")
    qa_dir = path / "qa" if (path / "qa").is_dir() else path
    rows = read_records(qa_dir, split=None if split == "all" else split)
    if not rows:
        raise ValueError(f"{qa_dir}: no QA records in split {split!r}")
    roots = _image_roots(qa_dir, path if path.is_dir() else path.parent, opts.get("root"))
    items = [EvalItem(
        id=r["id"], images=[_resolve(r["image"], roots)], question=r["question"], references=[r["answer"]],
        answer_type=r["answer_type"], options=list(r["options"] or []), answer_index=int(r["answer_index"]),
        label=r["label"] or "", family=r["family"], source=r["source"] or "",
        group=(r["ontology_path"] or [""])[0], fitzpatrick=int(r["fitzpatrick"] or 0),
    ) for r in rows]
    return items, {}


def load_mmskin(path: Path, args: list[str], opts: dict) -> tuple[list[EvalItem], dict]:
    """MM-Skin style CSV `image,question,answer` (optional `id`), free-text open answers."""
    root = Path(opts.get("root") or path.parent)
    rows = _read_csv(path, {"image", "question", "answer"})
    items = [EvalItem(id=row.get("id") or f"mmskin-{i}", images=[root / row["image"]], question=row["question"],
                      references=[row["answer"]], answer_type=OPEN, family="mmskin")
             for i, row in enumerate(rows)]
    return items, {}


def load_dermavqa(path: Path, args: list[str], opts: dict) -> tuple[list[EvalItem], dict]:
    """DermaVQA encounters: several images, a titled query and several responses in en/zh/es."""
    lang = opts.get("lang", "en")
    if lang not in ("en", "zh", "es"):
        raise ValueError(f"dermavqa lang must be en, zh or es, got {lang!r}")
    root = Path(opts.get("root") or path.parent)
    source = next((s for s in ("iiyi", "reddit") if s in path.name.lower()), "")
    items, skipped = [], {}
    for i, enc in enumerate(_read_json_list(path)):
        where = f"{path}: entry {i}"
        if not enc.get("encounter_id") or not enc.get("image_ids"):
            raise ValueError(f"{where}: needs encounter_id and image_ids")
        question = "\n".join(t for t in (enc.get(f"query_title_{lang}"), enc.get(f"query_content_{lang}")) if t)
        refs = [(r.get(f"content_{lang}") or "").strip() for r in enc.get("responses", [])]
        refs = [r for r in refs if r]
        if not question or not refs:
            reason = f"no {lang} query" if not question else f"no {lang} response"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        items.append(EvalItem(id=enc["encounter_id"], images=[root / n for n in enc["image_ids"]], question=question,
                              references=refs, answer_type=OPEN, family="dermavqa", source=source))
    return items, skipped


def load_slake(path: Path, args: list[str], opts: dict) -> tuple[list[EvalItem], dict]:
    """SLAKE / VQA-RAD JSON: entries with an image name, question, answer and OPEN/CLOSED answer type."""
    lang = opts.get("lang", "en")
    root = Path(opts.get("root") or path.parent)
    items, skipped = [], {}
    for i, e in enumerate(_read_json_list(path)):
        where = f"{path}: entry {i}"
        image = e.get("img_name") or e.get("image_name")
        kind = str(e.get("answer_type", "")).upper()
        if not image or "question" not in e or "answer" not in e or kind not in ("OPEN", "CLOSED"):
            raise ValueError(f"{where}: needs img_name/image_name, question, answer and answer_type OPEN/CLOSED")
        if lang != "all" and e.get("q_lang", "en") != lang:
            skipped[f"q_lang not {lang}"] = skipped.get(f"q_lang not {lang}", 0) + 1
            continue
        answer = str(e["answer"]).strip()
        yes_no = answer.lower() in ("yes", "no")
        options = ["yes", "no"] if kind == "CLOSED" and yes_no else []
        items.append(EvalItem(
            id=str(e.get("qid", i)), images=[root / image], question=e["question"], references=[answer],
            answer_type=CLOSED if kind == "CLOSED" else OPEN, options=options,
            answer_index=options.index(answer.lower()) if options else -1, label=answer,
            family=str(e.get("content_type") or e.get("question_type") or kind.lower()),
            source=str(e.get("modality") or e.get("image_organ") or ""),
        ))
    return items, skipped


def label_list(name: str, lists_path: Path | None = None) -> list[str]:
    lists_path = Path(lists_path or LABEL_LISTS)
    if not lists_path.is_file():
        raise FileNotFoundError(f"label lists not found: {lists_path} (pass lists=PATH in the bench spec)")
    lists = json.loads(lists_path.read_text())
    key = LIST_ALIASES.get(name.upper(), name)
    if key not in lists or not isinstance(lists[key], list):
        names = sorted(LIST_ALIASES) + sorted(k for k in lists if k.endswith("CLASSNAMES"))
        raise ValueError(f"unknown label list {name!r}; known: {', '.join(names)}")
    return lists[key]


def load_zeroshot(path: Path, args: list[str], opts: dict) -> tuple[list[EvalItem], dict]:
    """Zero-shot classification as multiple choice over a label list; CSV `image,label` (+ id, fitzpatrick)."""
    if not args:
        raise ValueError("zeroshot spec needs a label list: zeroshot:CSV:LISTNAME (PAD, HAM, F17K, DAFFODIL)")
    labels = label_list(args[0], opts.get("lists"))
    lookup = {lab.lower(): i for i, lab in enumerate(labels)}
    root = Path(opts.get("root") or path.parent)
    question = ZEROSHOT_QUESTION.format(options=format_options(labels))
    items = []
    for i, row in enumerate(_read_csv(path, {"image", "label"})):
        where = f"{path}: line {i + 2}"
        gold = lookup.get(row["label"].strip().lower())
        if gold is None:
            raise ValueError(f"{where}: label {row['label']!r} is not in list {args[0]}")
        fitz = row.get("fitzpatrick", row.get("fitzpatrick_scale"))
        items.append(EvalItem(id=row.get("id") or f"{args[0].lower()}-{i}", images=[root / row["image"]],
                              question=question, references=[labels[gold]], answer_type=CLOSED, options=labels,
                              answer_index=gold, label=labels[gold], family=f"zeroshot_{args[0].lower()}",
                              fitzpatrick=_fitzpatrick(fitz, where)))
    return items, {}


LOADERS = {"qa": load_qa, "mmskin": load_mmskin, "dermavqa": load_dermavqa, "slake": load_slake,
           "zeroshot": load_zeroshot}


def load_bench(spec: str) -> Bench:
    s = parse_spec(spec)
    if not s.path.exists():
        raise FileNotFoundError(f"bench spec {spec!r}: {s.path} does not exist")
    items, skipped = LOADERS[s.kind](s.path, s.args, s.opts)
    counts = Counter(it.id for it in items)
    if len(counts) != len(items):
        dup = sorted(x for x, n in counts.items() if n > 1)[:5]
        raise ValueError(f"bench {spec!r}: duplicate item ids, e.g. {dup}")
    return Bench(s.kind, spec, items, skipped)
