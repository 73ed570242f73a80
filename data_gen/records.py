"""The QA record: the one schema data_gen writes and every later stage reads."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file beside it and a rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    honour_umask(tmp)
    os.replace(tmp, path)


def umask() -> int:
    """This process's umask, read from /proc where it can be (setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path) -> None:
    """Give a file, or a folder and everything in it, the modes open()/mkdir() make: 0666/0777 less the umask.

    For files made through a temp file: mkstemp and mkdtemp make 0600/0700, and safetensors >= 0.8 writes
    every weights file 0600, so a model folder would be readable by its owner only (another user or a
    serving container could not load it).
    """
    mask = umask()
    for p in [Path(path), *(Path(path).rglob("*") if os.path.isdir(path) else ())]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def read_records(path: str | Path, split: str | None = None) -> list[dict]:
    """Read every *.parquet under a folder (or one file) as dicts, optionally one split only."""
    path = Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no parquet QA shards under {path}")
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return [r for r in rows if split is None or r["split"] == split]
