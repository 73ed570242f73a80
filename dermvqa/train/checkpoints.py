"""Checkpoints that resume safely: a completion marker, and picking the newest complete checkpoint.

transformers writes `checkpoint-N/` piece by piece (weights, optimizer, scheduler, RNG, state);
a job killed in the middle leaves a folder that looks like a checkpoint but is not one. After
every save finishes (on every rank) we write `checkpoint-N/COMPLETE`; `--resume` only takes
folders with that marker and moves newer unmarked ones aside as `incomplete-checkpoint-N`.
Full-model checkpoints are saved in LLaVA's older key layout (`language_model.model.*`);
`load_full_checkpoint` maps them back and refuses any key that does not load.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from atomic_files import write_text_atomic

MARKER = "COMPLETE"
STATE = "trainer_state.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


class CompletionMarker(TrainerCallback):
    """Write checkpoint-N/COMPLETE once every process has finished saving checkpoint-N."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            missing = missing_checkpoint_files(folder)
            if missing:
                raise RuntimeError(f"{folder}: saved without {missing}; not marking it complete")
            write_text_atomic(folder / MARKER, json.dumps({"step": state.global_step, "time": time.time()}))
        return control


def missing_checkpoint_files(folder: Path) -> list[str]:
    """Files a resumable checkpoint must hold that `folder` lacks (weights, state, optimizer)."""
    folder = Path(folder)
    missing = [] if (folder / STATE).is_file() else [STATE]
    has_weights = any((folder / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json",
                                                       "adapter_model.safetensors"))
    has_deepspeed = any(p.is_dir() for p in folder.glob("global_step*"))
    if not has_weights and not has_deepspeed:
        missing.append("model.safetensors / adapter_model.safetensors / DeepSpeed global_step*/")
    if not has_deepspeed and not (folder / "optimizer.pt").is_file():
        missing.append("optimizer.pt")
    return missing


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint-N folder in `run_dir`, oldest first."""
    run_dir = Path(run_dir)
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _STEP.match(p.name))] \
        if run_dir.is_dir() else []
    return sorted(found)


def latest_complete(run_dir: Path, set_aside: bool = True) -> Path | None:
    """The newest checkpoint with a completion marker; newer unmarked ones are renamed and reported."""
    chosen = None
    for step, folder in reversed(checkpoints(run_dir)):
        if (folder / MARKER).is_file():
            missing = missing_checkpoint_files(folder)
            if missing:
                raise FileNotFoundError(f"{folder}: marked complete but missing {missing} (files deleted since?)")
            chosen = folder
            break
        if set_aside:
            target = folder.with_name(f"incomplete-{folder.name}-{int(time.time())}")
            os.replace(folder, target)
            print(f"resume: {folder} has no {MARKER} marker (half-written when the job stopped); moved to {target}")
    return chosen


def load_full_checkpoint(model, folder: Path) -> None:
    """Load a whole-model checkpoint written by `save_pretrained` into `model`; any key that fails is an error.

    `save_pretrained` reverts transformers' key conversion (the checkpoint holds the older layout),
    so the saved name of every parameter is found by running that same reversion on the model's
    own names; tied weights saved once count as loaded.
    """
    from transformers.core_model_loading import revert_weight_conversion

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    state = {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    names = list(model.state_dict().keys())
    saved_as = revert_weight_conversion(model, {n: torch.tensor(i) for i, n in enumerate(names)})
    to_current = {saved: names[int(i)] for saved, i in saved_as.items()}
    state = {to_current.get(k, k): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    missing = [k for k in result.missing_keys if not (k in params and params[k].data_ptr() in loaded)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{folder}: checkpoint does not fit the model: {len(missing)} weights missing "
                           f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected "
                           f"(e.g. {result.unexpected_keys[:3]}); resuming would train from wrong weights")


def load_checkpoint_weights(model, folder: Path) -> None:
    """Restore the weights of checkpoint `folder` (whole model or LoRA adapter) into `model`, strictly."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        load_full_checkpoint(model, folder)
    elif (folder / "adapter_model.safetensors").is_file() and hasattr(model, "load_adapter"):
        result = model.load_adapter(str(folder), model.active_adapter, is_trainable=True)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"{folder}: adapter does not fit the model: missing {result.missing_keys[:3]}, "
                               f"unexpected {result.unexpected_keys[:3]}")
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or adapter_model.safetensors for this model")


def zero3_trainable_state_dict(model, rank0: bool) -> dict | None:
    """The trainable parameters (LoRA adapters, projector copy) of a ZeRO-3 model, whole, on rank 0's CPU.

    DeepSpeed's own consolidation gathers every layer, frozen 7B base included, and then drops the
    frozen weights; gathering only what trains moves the adapter's bytes, not the model's.
    """
    import deepspeed

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters([p for _, p in trainable], modifier_rank=None):
        return {n: p.detach().cpu().clone() for n, p in trainable} if rank0 else None
