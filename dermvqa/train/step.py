"""The training step `dermvqa train` uses: logits and loss only where there are labels, fast-path settings.

Most tokens of a VQA sample are image and prompt tokens that carry no label, so the LM head runs
only on label positions (a pre-hook on lm_head keeps just those rows; it works the same through
peft, DeepSpeed and every transformers 5 release, unlike a boolean `logits_to_keep`) and the
full-vocabulary fp32 logits of every token are never materialised; the cross-entropy runs in fp32
chunks that are recomputed in backward.

Precision: under DeepSpeed's bf16 engine the whole model, LoRA weights included, computes in bf16
with an fp32 master copy in the optimizer; that is how `dermvqa train` runs on one GPU too
(scripts/train_1gpu.sh). Without DeepSpeed we keep fp32 adapters and compute them in bf16 under
autocast, skipping peft's cast of every LoRA input to fp32. On one H200 (2026-11-26) that
autocast path ran at 0.78x the padded ZeRO-2 step, so one-GPU runs default to the engine;
dermvqa.bench.gpu_bench_train times both paths and profiles one step of each.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
CE_CHUNK = 4096  # label positions per fp32 cross-entropy chunk


def _chunk_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def label_only_loss(model, inputs: dict, num_items_in_batch=None):
    """Causal-LM loss over label positions; `inputs` holds `labels` (padded or packed batch).

    Returns (loss, number of predicted tokens). The loss is a sum divided by `num_items_in_batch`
    when given (token-level average across gradient-accumulation steps, as Trainer counts it),
    else by the number of label tokens in this batch.
    """
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    target_mask = labels[:, 1:] != IGNORE_INDEX
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = target_mask
    targets = labels[:, 1:][target_mask]
    handle = _unwrap(model).get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0][keep],))
    try:
        out = model(**{**inputs, "use_cache": False})
    finally:
        handle.remove()
    logits = out.logits.reshape(-1, out.logits.shape[-1])
    if logits.shape[0] != targets.numel():
        raise RuntimeError(f"model returned {logits.shape[0]} logits for {targets.numel()} label positions")
    total = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), CE_CHUNK):
        piece, tgt = logits[start:start + CE_CHUNK], targets[start:start + CE_CHUNK]
        if torch.is_grad_enabled() and piece.requires_grad:
            total = total + checkpoint(_chunk_ce, piece, tgt, use_reentrant=False)
        else:
            total = total + _chunk_ce(piece, tgt)
    denom = num_items_in_batch if num_items_in_batch is not None else max(targets.numel(), 1)
    if torch.is_tensor(denom):
        denom = denom.to(total.device)
    return total / denom, targets.numel()


def _unwrap(model):
    """The LlavaForConditionalGeneration inside DeepSpeed / peft wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def llm_layers(model):
    """The decoder layers of the LLM inside a (wrapped) LLaVA model."""
    return list(_unwrap(model).model.language_model.layers)


def checkpointing(model, enable: bool) -> None:
    """Switch transformers' activation checkpointing (non-reentrant) on or off, on any transformers 5."""
    base = _unwrap(model)
    if enable:
        on = getattr(base, "activation_checkpointing_enable", None)
        if on is not None:
            on(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        (getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable)()


def set_checkpointing(model, fraction: float) -> int:
    """Activation checkpointing on the first ceil(fraction * n) LLM layers only; returns that count.

    The vision tower and projector are left unchecked: the tower is frozen in our recipes, so its
    activations are never kept for backward anyway.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"checkpoint fraction must be in [0, 1], got {fraction}")
    base = _unwrap(model)
    checkpointing(base, fraction > 0)
    if fraction == 0.0:
        return 0
    layers = llm_layers(model)
    n = math.ceil(fraction * len(layers))
    for module in base.modules():
        if hasattr(module, "gradient_checkpointing") and module not in layers:
            module.gradient_checkpointing = False
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i < n
    return n


def keep_lora_inputs_in_compute_dtype(model) -> int:
    """Stop peft casting each LoRA input to the adapter's fp32 dtype (autocast does the matmul in bf16)."""
    count = 0
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False
            count += 1
    return count
