"""Write a model + processor folder atomically (a temp folder beside the target, renamed when complete), and
hash the files of one (what a manifest records to name the weights a figure came from)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from atomic_files import honour_umask


def save_model_folder(model, processor, out_dir: str | Path, sidecar_name: str, sidecar: dict) -> Path:
    """Save model (safetensors), processor and one JSON sidecar into `out_dir`; refuse a non-empty folder."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    (tmp / sidecar_name).write_text(json.dumps(sidecar, indent=2))
    honour_umask(tmp)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def files_sha256(files) -> str:
    """sha256 of the files' bytes read one after another, in the order given (one file: that file's sha256)."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
