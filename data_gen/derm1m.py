"""Derm1M CSV loader: column checks, placeholders mapped to missing, chunked streaming, bad-byte rows flagged.

Rows come out as `Row` objects in file order, in chunks of `chunk_rows`, so a 400k-row release never
sits in memory at once. A row that cannot be read cleanly (non-UTF-8 bytes, empty filename, a bad
`fitzpatrick` value) is still yielded, with `problem` saying why, so the caller can count it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

COLUMNS = ("filename", "caption", "truncated_caption", "source", "source_type", "disease_label",
           "hierarchical_disease_label", "skin_concept", "body_location", "symptoms", "age", "gender")
OPTIONAL_COLUMNS = ("fitzpatrick", "split", "three_partition_label")
THREE_PARTITION = ("malignant", "benign", "non-neoplastic")
_SPLIT_NAME = re.compile(r"[a-z][a-z0-9_-]*")

# Values Derm1M writes where a field is unknown (compared lower-cased and stripped).
MISSING = {"", "nan", "none", "no definitive diagnosis", "no visual concepts", "no body location information",
           "no symptom information", "no age information", "no gender information"}
_FST_IN_CAPTION = re.compile(r"\bFST ?([1-6])\b")


class CSVFormatError(ValueError):
    """The CSV cannot be read as a Derm1M release; the message names the file (and row where known)."""


@dataclass(slots=True)
class Row:
    index: int                  # 0-based data row (header excluded); row N in messages is index + 1
    filename: str
    caption: str
    source: str
    source_type: str
    disease_label: str          # "" when missing
    hierarchical_label: str     # "" when missing
    concepts: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    symptoms: list[str] = field(default_factory=list)
    age: int | None = None
    gender: str | None = None
    fitzpatrick: int = 0        # 1-6, 0 unknown
    split: str = ""             # a split the CSV gives (an imported dataset's own), "" = assign one
    three_partition: str = ""   # malignant / benign / non-neoplastic where the dataset states it (Fitzpatrick17k)
    problem: str = ""           # why the row cannot be used at all ("" = readable)
    detail: str = ""            # the offending value(s), for the rejection report


def _missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def _as_list(value: str) -> list[str]:
    if _missing(value):
        return []
    seen: dict[str, None] = {}
    for part in value.split(","):
        part = part.strip().lower()
        if part and part not in MISSING:
            seen[part] = None
    return list(seen)


def _age(value: str) -> int | None:
    value = value.strip()
    if _missing(value):
        return None
    try:
        age = int(float(value))
    except ValueError:
        return None
    return age if 0 <= age <= 120 else None


def _gender(value: str) -> str | None:
    value = value.strip().lower()
    return value if value in ("male", "female") else None


def check_columns(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """Return the header; raise CSVFormatError naming the file and every missing Derm1M column."""
    path = Path(path)
    if not path.is_file():
        raise CSVFormatError(f"{path}: CSV file not found")
    try:
        header = pd.read_csv(path, nrows=0, encoding=encoding, encoding_errors="replace").columns.tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise CSVFormatError(f"{path}: cannot read the CSV header ({e})") from e
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise CSVFormatError(f"{path}: missing Derm1M column(s) {missing}; found {header}")
    return header


def _parse(index: int, v: dict[str, str], has_fitz: bool, has_split: bool = False) -> Row:
    caption = v["caption"].strip() or v["truncated_caption"].strip()
    label = "" if _missing(v["disease_label"]) else v["disease_label"].strip()
    hier = "" if _missing(v["hierarchical_disease_label"]) else v["hierarchical_disease_label"].strip()
    row = Row(index=index, filename=v["filename"].strip(), caption=caption, source=v["source"].strip(),
              source_type=v["source_type"].strip(), disease_label=label, hierarchical_label=hier,
              concepts=_as_list(v["skin_concept"]), locations=_as_list(v["body_location"]),
              symptoms=_as_list(v["symptoms"]), age=_age(v["age"]), gender=_gender(v["gender"]))
    bad = [k for k, s in v.items() if "\ufffd" in s]
    if bad:
        row.problem, row.detail = "non-UTF-8 bytes", f"column(s) {bad}"
    elif not row.filename:
        row.problem = "empty filename"
    if has_fitz and v["fitzpatrick"].strip():
        try:
            fitz = int(float(v["fitzpatrick"]))
        except ValueError:
            fitz = -1
        if 1 <= fitz <= 6:
            row.fitzpatrick = fitz
        elif not row.problem:
            row.problem, row.detail = "fitzpatrick not in 1-6", repr(v["fitzpatrick"])
    elif (m := _FST_IN_CAPTION.search(caption)) is not None:
        row.fitzpatrick = int(m.group(1))  # "with FST2 skin tone" in the public-dataset captions
    if (partition := v.get("three_partition_label", "").strip().lower()) and not row.problem:
        if partition in THREE_PARTITION:
            row.three_partition = partition
        else:
            row.problem, row.detail = "three_partition_label not malignant, benign or non-neoplastic", repr(partition)
    if has_split and (split := v["split"].strip()):
        if _SPLIT_NAME.fullmatch(split):
            row.split = split
        elif not row.problem:
            row.problem, row.detail = "split is not a lower-case name", repr(split)
    return row


def iter_chunks(path: str | Path, chunk_rows: int = 10_000, encoding: str = "utf-8") -> Iterator[list[Row]]:
    """Yield lists of `chunk_rows` parsed rows (the last may be shorter), in file order."""
    for _, rows in iter_parts(path, chunk_rows, encoding):
        yield rows


def iter_parts(path: str | Path, chunk_rows: int = 10_000, encoding: str = "utf-8",
               only: set[int] | None = None) -> Iterator[tuple[int, list[Row]]]:
    """Yield (k, rows) for the k-th block of `chunk_rows` rows; blocks outside `only` are not parsed."""
    path = Path(path)
    header = check_columns(path, encoding)
    has_fitz, has_split = "fitzpatrick" in header, "split" in header
    cols = list(COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in header]
    reader = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, usecols=cols,
                         chunksize=chunk_rows, encoding=encoding, encoding_errors="replace")
    start = 0
    try:
        for k, df in enumerate(reader):
            if only is None or k in only:
                values = [df[c].tolist() for c in cols]
                yield k, [_parse(start + i, dict(zip(cols, vals)), has_fitz, has_split) for i, vals in enumerate(zip(*values))]
            start += len(df)
    except pd.errors.ParserError as e:
        raise CSVFormatError(f"{path}: malformed CSV after data row {start} ({e})") from e


def iter_rows(path: str | Path, chunk_rows: int = 10_000, encoding: str = "utf-8") -> Iterator[Row]:
    for chunk in iter_chunks(path, chunk_rows, encoding):
        yield from chunk
