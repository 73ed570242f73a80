"""Which parameters train: LoRA adapters on the LLM, the projector, optionally a 4-bit (QLoRA) base.

LoRA goes on every Linear of the LLM (4-bit Linear in QLoRA), never on the vision tower, the
projector or lm_head. The projector trains fully as a peft `modules_to_save` copy, so the saved
adapter folder carries it and `dermvqa export` can merge everything offline.
"""
from __future__ import annotations

import torch
from torch import nn

LLM_PREFIX = "model.language_model."
PROJECTOR = "multi_modal_projector"


def _is_linear(module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def lora_targets(model, targets="all-linear") -> list[str]:
    """Full names of the LLM's Linear modules to adapt; `targets` is all-linear or name suffixes."""
    names = [n for n, m in model.named_modules() if n.startswith(LLM_PREFIX) and _is_linear(m)]
    if targets != "all-linear":
        wanted = tuple(targets)
        names = [n for n in names if n.split(".")[-1] in wanted]
    if not names:
        raise ValueError(f"no Linear layer of the LLM matches lora targets {targets!r} "
                         f"(is this a LlavaForConditionalGeneration with model.language_model?)")
    return names


def apply_lora(model, r: int, alpha: int, dropout: float, targets="all-linear", train_projector: bool = True):
    """Wrap `model` with LoRA adapters (fp32) and a trainable projector copy; returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=lora_targets(model, targets),
                        modules_to_save=[PROJECTOR] if train_projector else None)
    return get_peft_model(model, config)


def set_trainable(model, mode: str) -> None:
    """full: every parameter; projector: the projector only (stage 1). LoRA modes are set by peft."""
    if mode not in ("full", "projector"):
        raise ValueError(f"tune.mode must be full, projector, lora or qlora, got {mode!r}")
    for name, p in model.named_parameters():
        p.requires_grad = mode == "full" or PROJECTOR in name


def quantization_config(quant: dict):
    """BitsAndBytesConfig for QLoRA from the recipe's tune.quant section."""
    from transformers import BitsAndBytesConfig

    if quant.get("type", "nf4") not in ("nf4", "fp4"):
        raise ValueError(f"tune.quant.type must be nf4 or fp4, got {quant.get('type')!r}")
    skip = list(quant.get("skip_modules") or [])
    for needed in ("model.vision_tower", "model.multi_modal_projector", "lm_head"):
        if needed not in skip:
            raise ValueError(f"tune.quant.skip_modules must contain {needed!r} (full name from the model root; "
                             f"a 4-bit projector cannot train and a 4-bit tower/lm_head loses accuracy)")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.get("type", "nf4"),
                              bnb_4bit_use_double_quant=bool(quant.get("double_quant", True)),
                              bnb_4bit_compute_dtype=getattr(torch, quant.get("compute_dtype", "bfloat16")),
                              llm_int8_skip_modules=skip)


def trainable_summary(model) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train:,} trainable of {total:,} parameters ({100 * train / max(total, 1):.2f} %)"
