"""HAM10000 with the official DermaMNIST (MedMNIST v2) split: `ham10000:DIR` reads DIR/HAM10000_metadata.csv
and DIR/dermamnist_split.csv (image_id, split, index_in_split, label); images are DIR/images/ISIC_*.jpg or
the original HAM10000_images_part_{1,2}/ folders.

Each image is asked twice: the 7-way diagnosis as an open question and as multiple choice over the seven
class names. Split `test` (2,005 images) unless `:split=train|val|all`; val/test keep the official row order.
A split label must agree with the metadata's dx; metadata rows the split file lacks are counted as skipped.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from dermvqa.eval.benchmarks.common import BenchError, ImageFinder, Loaded, image_roots, read_csv
from dermvqa.eval.items import CLOSED, OPEN, EvalItem
from dermvqa.eval.parse import format_options

# medmnist label order: (dx code, class name, DermLIP's short name accepted as an open answer too)
CLASSES = [("akiec", "actinic keratoses and intraepithelial carcinoma", "actinic keratosis"),
           ("bcc", "basal cell carcinoma", "basal cell carcinoma"),
           ("bkl", "benign keratosis-like lesions", "benign keratosis"),
           ("df", "dermatofibroma", "dermatofibroma"),
           ("mel", "melanoma", "melanoma"),
           ("nv", "melanocytic nevi", "nevus"),
           ("vasc", "vascular lesions", "vascular lesion")]
NAMES = [name for _, name, _ in CLASSES]
DX_INDEX = {code: i for i, (code, _, _) in enumerate(CLASSES)}
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
LAYOUT = ["images", "HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images"]
OPEN_QUESTION = "What is the most likely diagnosis of this dermatoscopic image?"
CHOICE_QUESTION = f"Which diagnosis does this dermatoscopic image show? {format_options(NAMES)}"


def _split_rows(split_csv: Path, meta: dict[str, dict]) -> list[tuple[int, int, str, dict]]:
    """(split rank, order in split, split, metadata row) per split-file row, checked against the metadata."""
    out = []
    for line, row in enumerate(read_csv(split_csv, "ham10000", {"image_id", "split", "label"}), start=2):
        where = f"{split_csv}: line {line}"
        m = meta.get(row["image_id"])
        if m is None:
            raise BenchError(f"{where}: image_id {row['image_id']!r} is not in HAM10000_metadata.csv")
        if row["split"] not in SPLIT_ORDER:
            raise BenchError(f"{where}: split {row['split']!r} is not train, val or test")
        label = row["label"].strip()
        if not label.isdigit() or int(label) >= len(CLASSES):
            raise BenchError(f"{where}: label {label!r} out of range 0-{len(CLASSES) - 1}")
        if int(label) != DX_INDEX[m["dx"]]:
            raise BenchError(f"{where}: label {label} ({CLASSES[int(label)][0]}) but the metadata says dx "
                             f"{m['dx']} for {row['image_id']}")
        index = (row.get("index_in_split") or "").strip()
        out.append((SPLIT_ORDER[row["split"]], int(index) if index.isdigit() else line, row["split"], m))
    return sorted(out, key=lambda r: r[:2])


def load(path: Path, args: list[str], opts: dict) -> Loaded:
    folder = path.parent if path.is_file() else path
    meta_csv, split_csv = folder / "HAM10000_metadata.csv", folder / "dermamnist_split.csv"
    meta = {}
    for line, row in enumerate(read_csv(meta_csv, "ham10000", {"image_id", "dx", "lesion_id"}), start=2):
        if row["dx"] not in DX_INDEX:
            raise BenchError(f"{meta_csv}: line {line}: unknown dx {row['dx']!r} (known: {', '.join(DX_INDEX)})")
        if row["image_id"] in meta:
            raise BenchError(f"{meta_csv}: line {line}: image_id {row['image_id']} listed twice")
        meta[row["image_id"]] = row
    skipped = Counter()
    if split_csv.is_file():
        rows = _split_rows(split_csv, meta)
        skipped["in the metadata but not in dermamnist_split.csv"] = len(meta) - len({r[3]["image_id"] for r in rows})
        info = {"split_file": "dermamnist_split.csv (MedMNIST v2 DermaMNIST, split by image)"}
    else:
        rows = [(0, i, "", m) for i, m in enumerate(meta.values())]
        info = {"split_file": "none: dermamnist_split.csv not found, every image is in split ''"}
    roots = image_roots(opts, folder, LAYOUT)
    find = ImageFinder(roots)
    items = []
    for _, _, split, m in rows:
        gold = DX_INDEX[m["dx"]]
        common = dict(images=[find(m["image_id"] + ".jpg")], label=NAMES[gold], source=m.get("dx_type") or "",
                      split=split)
        items += [EvalItem(id=f"{m['image_id']}/choice", question=CHOICE_QUESTION, references=[NAMES[gold]],
                           answer_type=CLOSED, options=NAMES, answer_index=gold, family="ham10000_choice", **common),
                  EvalItem(id=f"{m['image_id']}/diagnosis", question=OPEN_QUESTION,
                           references=[NAMES[gold], CLASSES[gold][2]], answer_type=OPEN,
                           family="ham10000_diagnosis", **common)]
    train_lesions = {m["lesion_id"] for _, _, s, m in rows if s == "train"}
    shared = sum(1 for _, _, s, m in rows if s == "test" and m["lesion_id"] in train_lesions)
    if shared:
        info["test_images_whose_lesion_is_in_train"] = shared
    return Loaded(items, +skipped, info=info, roots=roots, default_split="test" if split_csv.is_file() else None)
