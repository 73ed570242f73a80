"""A LoRA/QLoRA adapter folder on its base model, loaded as it was trained or merged into one model.

A QLoRA run trains its adapters against a 4-bit (NF4) base; merging them into an unquantised base
rounds twice and is not the model that was trained. So a QLoRA adapter is evaluated on the 4-bit
base it was trained with (the quantisation settings travel as `quantization_config.json` beside
the adapter or in its run folder), and `dermvqa export` measures what merging changes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration

QUANT_FILE = "quantization_config.json"


def adapter_base(path: Path) -> str:
    base = json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path}/adapter_config.json: no base_model_name_or_path; cannot tell the base model")
    return base


def find_quantization(path: Path) -> dict | None:
    """The 4-bit settings a QLoRA adapter was trained with: beside it, or in its run folder (checkpoint-N)."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        if (folder / QUANT_FILE).is_file():
            return json.loads((folder / QUANT_FILE).read_text())
    return None


def load_adapter_model(path: Path, dtype=torch.float32, device: str = "cpu", merge: bool | None = None):
    """Base + adapter. Default: a LoRA adapter merged, a QLoRA adapter kept on its 4-bit base (as trained)."""
    from peft import PeftModel

    quant = find_quantization(path)
    merge = quant is None if merge is None else merge
    kwargs = {"dtype": dtype}
    if quant is not None and not merge:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig.from_dict(quant)
        kwargs["device_map"] = {"": 0 if device.startswith("cuda") else "cpu"}
    model = LlavaForConditionalGeneration.from_pretrained(adapter_base(path), **kwargs)
    model = PeftModel.from_pretrained(model, path)
    return model.merge_and_unload() if merge else model
