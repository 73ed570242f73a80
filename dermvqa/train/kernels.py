"""Kernel choices of the training step: the LLM's attention implementation and Liger Kernel's fused layers.

`train.attn_implementation` sets the language model's attention only (the vision tower keeps its
own, sdpa). With packing, sdpa and flex_attention get a block-diagonal mask from transformers;
flex_attention skips the masked blocks instead of falling off the flash kernel as sdpa does with
a mask. torch's FlexAttention has no backward pass on the CPU, so training with it needs a GPU.

`train.liger` (auto | true | false) swaps Liger Kernel's Triton RMSNorm, SwiGLU and RoPE into the
LLM (pip `liger-kernel`, CUDA only); auto applies them where CUDA and the package are present.
Liger's cross-entropy kernels stay off: the step already computes logits at label positions only,
in fp32 chunks (dermvqa/train/step.py).
"""
from __future__ import annotations

import torch

from dermvqa.train.step import _unwrap

LIGER_FAMILIES = ("qwen2", "llama", "mistral", "phi3")


def flex_missing() -> str | None:
    """Why flex_attention cannot train here, or None."""
    return None if torch.cuda.is_available() else "no CUDA GPU (torch's FlexAttention has no backward on the CPU)"


def liger_missing() -> str | None:
    """Why Liger Kernel cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU (Liger Kernel's kernels are Triton)"
    try:
        import liger_kernel.transformers.monkey_patch  # noqa: F401
    except ImportError as e:
        return f"liger-kernel is not importable ({e}); pip install liger-kernel"
    return None


def set_llm_attention(model, kind: str) -> None:
    """The LLM's attention implementation (text config only); refuses a kind that cannot train here."""
    if kind == "flex_attention" and (why := flex_missing()):
        raise ValueError(f"train.attn_implementation=flex_attention needs a GPU: {why}; use sdpa")
    _unwrap(model).set_attn_implementation({"text_config": kind})


def apply_liger(model, setting) -> bool:
    """Liger's RMSNorm, SwiGLU and RoPE on the LLM as `setting` says; True when applied."""
    if setting not in ("auto", True, False):
        raise ValueError(f"train.liger must be auto, true or false, got {setting!r}")
    if setting is False:
        return False
    why = liger_missing()
    family = _unwrap(model).config.get_text_config().model_type
    if setting == "auto" and (why or family not in LIGER_FAMILIES):
        return False
    if why:
        raise RuntimeError(f"train.liger=true cannot run here: {why}; set train.liger=auto or false")
    if family not in LIGER_FAMILIES:
        raise ValueError(f"train.liger=true: LLM family {family!r} is not one of {LIGER_FAMILIES}")
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    MODEL_TYPE_TO_APPLY_LIGER_FN[family](rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                         fused_linear_cross_entropy=False, model=_unwrap(model).model.language_model)
    return True


def use_kernels(model, train: dict) -> None:
    """Apply the recipe's train.attn_implementation and train.liger to a freshly loaded model."""
    set_llm_attention(model, train["attn_implementation"])
    apply_liger(model, train["liger"])
