"""The photos `dermvqa ood-choose` reads: reference photos named by a folder, a glob or a CSV column, each
checked readable before any model work, and a record of which photos a choice saw (count + hash of names)."""
from __future__ import annotations

import csv
import glob
import hashlib
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_COLUMN = "path"
HELD_OUT = "held-out"  # the in-distribution check on the held-out training images, not on a split


def list_photos(spec: str, column: str = DEFAULT_COLUMN) -> list[Path]:
    """The photos `spec` names, distinct and sorted: every photo file under a folder (subfolders included),
    every file a glob matches (`**` crosses folders), or the `column` of a .csv file (each path relative to the
    CSV's folder, or absolute). Nothing found is an error, as is a CSV row naming a missing file."""
    path = Path(spec)
    if path.is_dir():
        photos = [p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()]
    elif path.suffix.lower() == ".csv" and path.is_file():
        photos = csv_photos(path, column)
    elif any(c in spec for c in "*?["):
        photos = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    else:
        raise FileNotFoundError(f"reference photos {spec}: not a folder, a glob or a .csv file")
    if not photos:
        raise ValueError(f"reference photos {spec}: no photos found"
                         + (f" (photo suffixes: {', '.join(sorted(PHOTO_SUFFIXES))})" if path.is_dir() else ""))
    return sorted(set(photos))


def csv_photos(path: Path, column: str) -> list[Path]:
    """The photo paths in `column` of a CSV file, relative to its folder."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])}); "
                             "name the column of photo paths with --reference-column")
        photos = []
        for row in reader:
            value = (row[column] or "").strip()
            photo = path.parent / value
            if not value or not photo.is_file():
                raise FileNotFoundError(f"{path} line {reader.line_num}: {column} "
                                        + (f"{photo} does not exist" if value else "is empty"))
            photos.append(photo)
    return photos


def check_readable(photos: list[Path]) -> None:
    """Every photo opens as an image (its header only: cheap); the first that does not is an error naming it."""
    for photo in photos:
        try:
            with Image.open(photo):
                pass
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{photo}: not a readable photo ({type(e).__name__}: {e})") from e


def open_photo(photo: Path) -> Image.Image:
    """The decoded RGB photo; a file that fails to decode is an error naming it."""
    try:
        return Image.open(photo).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{photo}: not a readable photo ({type(e).__name__}: {e})") from e


def photo_record(photos: list[Path]) -> dict:
    """Which photos these are, without listing them: their count, common folder and the SHA-256 of their sorted
    paths relative to that folder (one a line)."""
    resolved = [p.resolve() for p in photos]
    folder = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else None
    names = "\n".join(sorted(p.relative_to(folder).as_posix() for p in resolved)) if resolved else ""
    return {"count": len(photos), "folder": str(folder) if folder else None,
            "names_sha256": hashlib.sha256(names.encode()).hexdigest()}
