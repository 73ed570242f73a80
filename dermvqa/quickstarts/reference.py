"""Reference photos for the quickstarts' out-of-distribution choice: splits of another dataset in the shared data
folder beside --data, never those dermvqa/bench/ood_real.py measures on (all of PAD-UFES-20, the Fitzpatrick17k
and HAM10000 test splits, listed by the same functions), so its figures stay on photos nothing was chosen on."""
from __future__ import annotations

import csv
from pathlib import Path


def beside(data: Path, name: str, index: str) -> Path | str:
    """The dataset folder `name` next to --data, or why it is not there (its `index` file missing)."""
    folder = Path(data).resolve().parent / name
    return folder if (folder / index).is_file() else f"no reference photos beside --data ({folder / index} not found)"


def fitzpatrick17k_photos(folder: Path, split: str) -> list[Path]:
    """The Fitzpatrick17k AJL subset's photos of one split (ajl_subset.csv: md5hash, ajl_split)."""
    with open(folder / "ajl_subset.csv", newline="", encoding="utf-8") as f:
        return sorted(folder / "images" / f"{r['md5hash']}.jpg" for r in csv.DictReader(f) if r["ajl_split"] == split)


def ham10000_photos(folder: Path, split: str) -> list[Path]:
    """HAM10000's photos of one DermaMNIST split (dermamnist_split.csv: image_id, split)."""
    with open(folder / "dermamnist_split.csv", newline="", encoding="utf-8") as f:
        return sorted(folder / "images" / f"{r['image_id']}.jpg" for r in csv.DictReader(f) if r["split"] == split)
