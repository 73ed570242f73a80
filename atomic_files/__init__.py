"""Writing files so that readers never see half of one, with the modes open()/mkdir() would give them.

The one place for generic file writing: data_gen (records, reports) and every dermvqa layer (model folders,
checkpoints, eval reports) import it, so neither depends on the other for how a file reaches the disk.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
