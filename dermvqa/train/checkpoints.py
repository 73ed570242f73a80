"""Checkpoints that resume safely: a completion marker, and picking the newest complete checkpoint.

transformers writes `checkpoint-N/` piece by piece (weights, optimizer, scheduler, RNG, state);
a job killed in the middle leaves a folder that looks like a checkpoint but is not one. After
every save finishes (on every rank) we write `checkpoint-N/COMPLETE`; `--resume` only takes
folders with that marker and moves newer unmarked ones aside as `incomplete-checkpoint-N`.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from transformers import TrainerCallback

from data_gen.records import write_text_atomic

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
