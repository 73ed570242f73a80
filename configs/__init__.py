"""The recipes and DeepSpeed files shipped with dermvqa, and the rule that finds one by name.

This folder is installed as the package `dermvqa.configs` (pyproject.toml maps it), so a non-editable install
carries it. A config argument (a recipe, train.deepspeed) is a path or a shipped name: an existing file is used as
it is; otherwise the name is looked up among the shipped configs, with or without its .yaml / .json ending and
with or without a leading `configs/`, so `tiny_cpu`, `qwen2.5-7b/stage2_lora` and `configs/deepspeed/zero2.json`
work from any folder.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ENDINGS = (".yaml", ".json")


def shipped_root() -> Path:
    """The installed folder of the shipped configs (a package on disk, never inside a zip)."""
    return Path(str(files(__name__)))


def shipped_names() -> list[str]:
    """Every shipped config by the name that finds it, e.g. `qwen2.5-7b/stage2_lora`, `deepspeed/zero2`."""
    root = shipped_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*") if p.suffix in ENDINGS)


def find_config(name: str | Path, what: str = "config") -> Path:
    """NAME as a path when that file exists, else the shipped config it names; `what` names it in the error."""
    path = Path(name)
    if path.is_file():
        return path
    root, relative = shipped_root(), path.as_posix().removeprefix("configs/")
    for candidate in (relative, *(relative + ending for ending in ENDINGS)):
        if (root / candidate).is_file():
            return root / candidate
    raise FileNotFoundError(f"{what} not found: {name} is neither a file nor a shipped config "
                            f"(shipped: {', '.join(shipped_names())})")
