"""Write a model + processor folder atomically: a temp folder beside the target, renamed when complete."""
from __future__ import annotations

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
