"""What every format loader shares: reading CSV/JSON with errors that name the file and row, telling a file
of the wrong kind apart, finding images in a dataset's official layout, and the Loaded result."""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dermvqa.eval.items import EvalItem

FORMAT_NAMES = {"qa": "dermvqa QA", "mmskin": "MM-Skin CSV", "dermavqa": "DermaVQA JSON", "slake": "SLAKE JSON",
                "vqarad": "VQA-RAD JSON", "zeroshot": "zero-shot classification CSV",
                "ham10000": "HAM10000 folder"}


class BenchError(ValueError):
    """Bad benchmark input: the message names the file, the row or entry, and the problem."""


@dataclass
class Loaded:
    items: list[EvalItem]
    skipped: Counter = field(default_factory=Counter)   # reason -> count, for rows or references left out
    info: dict = field(default_factory=dict)           # what the loader decided, copied into metrics.json
    roots: list[Path] = field(default_factory=list)     # image folders looked in, most specific first
    default_split: str | None = None                    # split taken when the spec names none


def guess_kind(path: Path) -> str | None:
    """The benchmark kind a file looks like, from its header or first entry; None when unknown."""
    if path.is_dir():
        if (path / "HAM10000_metadata.csv").is_file():
            return "ham10000"
        return "qa" if (path / "qa").is_dir() or any(path.glob("*.parquet")) else None
    try:
        if path.suffix.lower() == ".json":
            first = json.loads(path.read_text(encoding="utf-8"))[0]
            keys = set(first)
        else:
            with open(path, newline="", encoding="utf-8") as f:
                keys = set(next(csv.reader(f), []))
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return None
    for kind, needed in (("slake", {"img_name", "q_lang"}), ("vqarad", {"image_name", "phrase_type"}),
                         ("dermavqa", {"encounter_id", "image_ids"}), ("mmskin", {"image", "question", "answer"}),
                         ("zeroshot", {"image_path", "label"}), ("ham10000", {"image_id", "dx"})):
        if needed <= keys:
            return kind
    return None


def wrong_kind(path: Path, kind: str, problem: str) -> BenchError:
    """The error for a file that is not what its spec says, pointing to the right kind when it is known."""
    guess = guess_kind(path)
    hint = ""
    if guess and guess != kind:
        target = path.parent if guess == "ham10000" and path.is_file() else path
        hint = f"; it looks like a {FORMAT_NAMES[guess]}: use --bench {guess}:{target}"
    return BenchError(f"{path}: not a {FORMAT_NAMES[kind]} ({problem}){hint}")


def read_csv(path: Path, kind: str, required: set[str]) -> list[dict]:
    """Rows as dicts (line numbers start at 2, after the header); a missing required column is an error."""
    if not path.is_file():
        raise BenchError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = required - set(reader.fieldnames or [])
            if missing:
                raise wrong_kind(path, kind, f"missing column(s) {sorted(missing)}; has {reader.fieldnames}")
            return list(reader)
    except UnicodeDecodeError:
        raise wrong_kind(path, kind, "not UTF-8 text") from None


def read_json_list(path: Path, kind: str) -> list[dict]:
    if not path.is_file():
        raise BenchError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise wrong_kind(path, kind, f"not JSON: {e}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise wrong_kind(path, kind, "expected a JSON list of entries")
    return data


def fitzpatrick(value, where: str) -> int:
    """Skin type 1-6; empty, 0 and -1 (Fitzpatrick17k's 'unknown') map to 0."""
    if value in (None, ""):
        return 0
    try:
        v = int(float(value))
    except ValueError:
        raise BenchError(f"{where}: fitzpatrick value {value!r} is not a number") from None
    if v in (0, -1):
        return 0
    if not 1 <= v <= 6:
        raise BenchError(f"{where}: fitzpatrick value {v} outside 1-6")
    return v


def image_roots(opts: dict, source: Path, layout: list[str]) -> list[Path]:
    """The folders to look for images in: the official sub-folders (`layout`) of root= (default: the
    benchmark's folder) that exist, then root itself. A root= that is not a folder is an error."""
    root = Path(opts["root"]) if opts.get("root") else source if source.is_dir() else source.parent
    if not root.is_dir():
        raise BenchError(f"{source}: image folder root={root} not found")
    return [root / sub for sub in layout if (root / sub).is_dir()] + [root]


class ImageFinder:
    """Resolves an image path as a file names it: under each root, the whole relative path, then with its
    leading folders dropped one by one (MM-Skin's `dataset/...`, absolute paths from the authors' machines,
    `data/downstream/PAD/images/...`). An unresolved path points under the first root (not repeating its name)."""

    def __init__(self, roots: list[Path]):
        self.roots = roots

    def __call__(self, name: str) -> Path:
        parts = [p for p in Path(name.strip()).parts if p not in ("/", "\\", ".")]
        for root in self.roots:
            for k in range(len(parts)):
                candidate = root.joinpath(*parts[k:])
                if candidate.is_file():
                    return candidate
        first = self.roots[0]
        return first.joinpath(*parts[1:] if parts and parts[0] == first.name else parts)
