"""The QA record: the one schema data_gen writes and every later stage reads."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atomic_files import honour_umask

CLOSED, OPEN = "closed", "open"


@dataclass
class QARecord:
    id: str                      # stable: hash of (image, family, question template, seed)
    image: str                   # path relative to the image root, as in Derm1M's `filename`
    question: str
    answer: str                  # the target text the model is trained to produce
    family: str                  # diagnosis | yes_no | multiple_choice | morphology | ... | caption_report
    answer_type: str             # "closed" (options / yes-no) or "open"
    options: list[str] = field(default_factory=list)
    answer_index: int = -1       # index into options for closed questions, -1 for open
    label: str = ""              # the short gold answer (diagnosis name, "yes", concept, ...)
    ontology_path: list[str] = field(default_factory=list)  # top-level group ... leaf
    source: str = ""
    source_type: str = ""
    split: str = "train"
    fields: list[str] = field(default_factory=list)  # CSV columns the record was built from
    fitzpatrick: int = 0         # 1-6 where the data carries skin type, 0 = unknown
    # Later turns of a multi-turn conversation about the same image, [{"question", "answer"}, ...];
    # question/answer above are its first turn. Parquet written before this column existed reads as [].
    follow_ups: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if self.answer_type not in (CLOSED, OPEN):
            raise ValueError(f"record {self.id}: answer_type must be closed/open, got {self.answer_type!r}")
        if self.answer_type == CLOSED and not (0 <= self.answer_index < len(self.options)):
            raise ValueError(f"record {self.id}: closed record needs answer_index inside options")


SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.string()), ("question", pa.string()), ("answer", pa.string()),
    ("family", pa.string()), ("answer_type", pa.string()), ("options", pa.list_(pa.string())),
    ("answer_index", pa.int32()), ("label", pa.string()), ("ontology_path", pa.list_(pa.string())),
    ("source", pa.string()), ("source_type", pa.string()), ("split", pa.string()),
    ("fields", pa.list_(pa.string())), ("fitzpatrick", pa.int8()),
    ("follow_ups", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string())]))),
])


def write_parquet(records: list[QARecord], path: str | Path) -> None:
    """Write records atomically (temp file + rename) so a killed run never leaves half a shard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Column by column: dataclasses.asdict deep-copies every list and dominated synthesis time.
    table = pa.Table.from_pydict({f.name: [getattr(r, f.name) for r in records] for f in fields(QARecord)},
                                 schema=SCHEMA)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    pq.write_table(table, tmp)
    honour_umask(tmp)
    os.replace(tmp, path)


def read_records(path: str | Path, split: str | None = None) -> list[dict]:
    """Read every *.parquet under a folder (or one file) as dicts, optionally one split only."""
    path = Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no parquet QA shards under {path}")
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return [r for r in rows if split is None or r["split"] == split]


class Records:
    """QA records as a memory-mapped Arrow table (HF `datasets`) and the rows in use, in order.

    Rows are read one at a time as dicts; whole columns come back as Arrow arrays. Nothing is copied
    into Python objects up front, so every rank and DataLoader worker shares the same mapped pages
    (a list of dicts would cost ~2.6 KB a record in every process that touches it).
    """

    def __init__(self, dataset, rows: np.ndarray):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[int(self.rows[i])]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def column(self, name: str) -> pa.Array:
        return self.dataset.data.table.column(name).take(pa.array(self.rows)).combine_chunks()

    def take(self, positions) -> Records:
        """These records at `positions` (numpy indices or a boolean mask), as a new view."""
        return Records(self.dataset, self.rows[np.asarray(positions)])


def open_records(path: str | Path, split: str | None = None, families="all") -> Records:
    """Every *.parquet under a folder (or one file), memory-mapped, optionally one split and some families.

    The first open converts the shards to an Arrow file in the `datasets` cache (HF_DATASETS_CACHE);
    later opens, by any process, map that file.
    """
    import datasets

    path = Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no parquet QA shards under {path}")
    datasets.disable_progress_bars()
    dataset = datasets.Dataset.from_parquet([str(f) for f in files])
    table = dataset.data.table
    keep = np.ones(len(dataset), dtype=bool)
    if split is not None:
        keep &= pc.equal(table.column("split"), split).to_numpy(zero_copy_only=False)
    if families != "all":
        keep &= pc.is_in(table.column("family"), pa.array(list(families))).to_numpy(zero_copy_only=False)
    return Records(dataset, np.flatnonzero(keep))
