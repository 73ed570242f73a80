"""Checks that run before any training step, so a bad recipe or folder fails in seconds, not hours."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_gen.records import Records
from dermvqa.data.conversation import TooLong, record_messages, tokenize_chat, user_turn
from dermvqa.train.curriculum import text_lengths

WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PROCESSOR = ("processor_config.json", "preprocessor_config.json")
TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


def check_model_folder(path: str | Path) -> None:
    """A LLaVA folder must hold config, every weight shard, processor and tokenizer files."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if (path / "model.safetensors.index.json").is_file():
        index = json.loads((path / "model.safetensors.index.json").read_text())
        missing += sorted({s for s in index.get("weight_map", {}).values() if not (path / s).is_file()})
    elif not (path / "model.safetensors").is_file():
        missing.append("model.safetensors (or model.safetensors.index.json + shards)")
    if not any((path / n).is_file() for n in PROCESSOR):
        missing.append(" or ".join(PROCESSOR))
    if not any((path / n).is_file() for n in TOKENIZER):
        missing.append(" or ".join(TOKENIZER))
    if missing:
        raise FileNotFoundError(f"model folder {path} is incomplete, missing: {', '.join(missing)}")
    if list(path.glob("*.bin")) and not (path / "model.safetensors").is_file() and \
            not (path / "model.safetensors.index.json").is_file():
        raise ValueError(f"{path}: only pickle .bin weights; convert them to safetensors first")


def check_recipe(recipe: dict) -> None:
    """Combinations that cannot work, reported before any model is loaded."""
    tune, tr = recipe["tune"], recipe["train"]
    mode = tune["mode"]
    if mode not in ("full", "projector", "lora", "qlora"):
        raise ValueError(f"tune.mode must be full, projector, lora or qlora, got {mode!r}")
    if mode in ("lora", "qlora") and not tune.get("lora"):
        raise ValueError(f"tune.mode={mode} needs a tune.lora section (r, alpha, dropout, targets)")
    if mode == "qlora" and not tune.get("quant"):
        raise ValueError("tune.mode=qlora needs a tune.quant section")
    ds = tr.get("deepspeed")
    if ds:
        path = Path(ds)
        if not path.is_file():
            raise FileNotFoundError(f"train.deepspeed: {path} does not exist")
        stage = json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0)
        if mode == "qlora" and stage == 3:
            raise ValueError(f"train.deepspeed={ds} is ZeRO-3, which rejects the device_map a 4-bit model needs; "
                             f"use configs/deepspeed/zero2.json for QLoRA")
    if not 0 <= float(tr.get("checkpoint_layers", 0)) <= 1:
        raise ValueError(f"train.checkpoint_layers must be in [0, 1], got {tr['checkpoint_layers']}")


def check_lengths(processor, records: Records, max_length: int, image_tokens: int, worst: int = 200,
                  max_skipped_fraction: float = 1.0) -> int:
    """Every prompt (image tokens included) must leave room for an answer token within max_length, and the
    whole conversations that will not fit (the dataset skips them) must stay within the skip budget.

    Checks the template with an empty question first, then the `worst` longest questions, then the `worst`
    longest whole conversations (follow-up turns included), tokenized as the dataset tokenizes them.
    Returns how many of those will be skipped (a lower bound for the whole set).
    """
    tokenizer = processor.tokenizer

    def prompt_tokens(question: str) -> int:
        text = processor.apply_chat_template([user_turn(question)], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids) - ids.count(processor.image_token_id) + image_tokens

    base = prompt_tokens("")
    if base >= max_length:
        raise ValueError(f"data.max_length={max_length} cannot hold even an empty prompt: {image_tokens} image "
                         f"tokens + template = {base} tokens; raise max_length above {base + 32}")
    chars = pc.utf8_length(records.column("question")).to_numpy(zero_copy_only=False)
    longest = [records[int(i)] for i in np.argsort(-chars, kind="stable")[:worst]]
    too_long = [(r["id"], n) for r in longest if (n := prompt_tokens(r["question"])) >= max_length]
    if too_long:
        shown = ", ".join(f"{rid} ({n} tokens)" for rid, n in too_long[:5])
        raise ValueError(f"data.max_length={max_length} would cut into the prompt of {len(too_long)} of the "
                         f"{len(longest)} longest questions, e.g. {shown}; raise max_length or drop them")
    over = []
    for i in np.argsort(-text_lengths(records), kind="stable")[:worst]:
        record = records[int(i)]
        try:
            tokenize_chat(record_messages(record), tokenizer, processor.chat_template, processor.image_token,
                          image_tokens, max_length)
        except TooLong:
            over.append(record["id"])
    budget = int(max_skipped_fraction * len(records))
    if len(over) > budget:
        raise ValueError(f"{len(over)} of the {min(worst, len(records))} longest conversations do not fit "
                         f"data.max_length={max_length} (e.g. {', '.join(over[:5])}) and would be skipped, more than "
                         f"data.max_skipped_fraction={max_skipped_fraction} allows ({budget} of {len(records)} "
                         f"records); raise max_length or drop them")
    return len(over)


def check_images(records: Records, image_root: str | Path, rank: int = 0, world_size: int = 1) -> None:
    """Every record's image file exists: one stat per distinct image, in parallel, and under a multi-process
    launcher each rank stats its own share (any rank's failure stops the job). Unreadable files are skipped
    later, when the dataset decodes them; a stat is the whole check, so there is nothing to cache."""
    root = Path(image_root)
    images = pc.dictionary_encode(records.column("image"))  # distinct images in order of first use
    codes = images.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    mine = range(rank, len(images.dictionary), world_size)
    names = images.dictionary.take(pa.array(mine, type=pa.int64())).to_pylist()
    with ThreadPoolExecutor(16) as pool:  # stats wait on the disk (or a network filesystem), not the CPU
        found = list(pool.map(lambda name: (root / name).is_file(), names))
    missing = {name: records[int(first[k])]["id"] for k, name, ok in zip(mine, names, found) if not ok}
    if missing:
        image, rid = next(iter(missing.items()))
        more = f" (and {len(missing) - 1} more missing images)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"record {rid}: image file not found: {root / image}{more}")
