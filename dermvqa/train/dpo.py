"""Stage 3: DPO with TRL on preference pairs (`dermvqa data export-preference`), LoRA on a stage-2 LLaVA folder.

TRL's DPOTrainer does the preference loss, the reference policy and the Trainer loop (checkpoints, resume,
DeepSpeed). The reference is the same model with the LoRA adapter disabled: TRL's own path for a `peft_config`,
so no second copy of the model is held. Wrapped, not forked:
- the data: TRL's vision collator renders the chat template itself, left-pads prompts and truncates at
  max_length (which can cut image tokens or an answer). Ours (`PreferenceCollator`) tokenizes chosen and rejected
  with dermvqa.data.conversation.tokenize_chat, the ids supervised training and inference use, and the completion
  mask is exactly its label positions (no image or prompt token); a pair too long for max_length is skipped and
  counted, never cut. Images are read from image_root when a batch is made, as in stage 2.
- the dataset holds our token ids and an `image` path, so TRL takes it as a vision dataset and leaves it
  untokenised; `max_length=None` keeps TRL from truncating.
- the LoRA config comes from dermvqa.train.tuning (the LLM's Linear layers only); the projector and tower stay
  as stage 2 left them, so the stage-2 out-of-distribution summary and label files still hold and are copied.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import datasets
import torch
import yaml
from peft import LoraConfig
from transformers import set_seed
from trl import DPOConfig, DPOTrainer

from atomic_files import honour_umask, write_text_atomic
from dermvqa.data.conversation import TooLong, record_messages, tokenize_chat
from dermvqa.data.skips import SkipLog, skip_summary
from dermvqa.model.processor import tokens_per_image
from dermvqa.train.checkpoints import (
    CompletionMarker,
    latest_complete,
    load_checkpoint_weights,
)
from dermvqa.train.preflight import check_recipe
from dermvqa.train.trainer import (
    SKIPPED,
    load_model,
    prepare_run_folder,
    training_arguments,
    with_defaults,
)
from dermvqa.train.tuning import lora_targets, trainable_summary

SUMMARY = "preference_summary.json"


def read_pairs(path: str | Path) -> list[dict]:
    """The JSON lines `dermvqa data export-preference` wrote; a malformed line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.pairs: {path} not found (make it with `dermvqa data export-preference`)")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            p = json.loads(line)
            pairs.append({"id": p["id"], "image": p["image"], "rule": p["rule"],
                          "question": next(c["text"] for c in p["prompt"][0]["content"] if c["type"] == "text"),
                          "chosen": p["chosen"][0]["content"], "rejected": p["rejected"][0]["content"]})
        except (json.JSONDecodeError, KeyError, IndexError, StopIteration, TypeError) as e:
            raise ValueError(f"{path} line {n}: not a preference pair ({type(e).__name__}: {e})") from None
    if not pairs:
        raise ValueError(f"{path}: no preference pairs")
    return pairs


def tokenize_pairs(pairs: list[dict], processor, max_length: int, skips: SkipLog) -> list[dict]:
    """Each pair's chosen and rejected conversations as (ids, labels); a pair either side of max_length is skipped."""
    args = (processor.tokenizer, processor.chat_template, processor.image_token, tokens_per_image(processor),
            max_length)
    out = []
    for p in pairs:
        try:
            chosen = tokenize_chat(record_messages({"question": p["question"], "answer": p["chosen"]}), *args)
            rejected = tokenize_chat(record_messages({"question": p["question"], "answer": p["rejected"]}), *args)
        except TooLong as e:
            skips.add(p, f"too long: {e}")
            continue
        out.append({"id": p["id"], "image": p["image"], "rule": p["rule"], "chosen_ids": chosen[0],
                    "chosen_labels": chosen[1], "rejected_ids": rejected[0], "rejected_labels": rejected[1]})
    return out


class PreferenceCollator:
    """A batch of pairs as TRL's DPO step reads it: chosen rows first, then the rejected rows in the same order,
    right-padded; completion_mask marks the answer tokens (labels of tokenize_chat), pixel_values repeat."""

    def __init__(self, image_root: str | Path, image_processor, pad_token_id: int):
        self.image_root, self.image_processor, self.pad = Path(image_root), image_processor, pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        rows = [(e["chosen_ids"], e["chosen_labels"]) for e in examples] + \
               [(e["rejected_ids"], e["rejected_labels"]) for e in examples]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        completion = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labels) in enumerate(rows):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            attention[i, :len(ids)] = 1
            completion[i, :len(ids)] = torch.tensor([lab != -100 for lab in labels], dtype=torch.long)
        pixels = [self._pixels(e["image"]) for e in examples]
        return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion,
                "pixel_values": torch.stack(pixels + pixels)}

    def _pixels(self, image: str) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.image_root / image) as im:
            return self.image_processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"][0]


class RecipeDPOTrainer(DPOTrainer):
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers' own loader only warns when adapter keys miss; ours refuses (dermvqa/train/checkpoints.py)
        load_checkpoint_weights(model or self.model, resume_from_checkpoint)


def start_folder(recipe: dict) -> Path:
    """The stage-2 model: a full LLaVA folder (a LoRA adapter must be merged with `dermvqa export` first, so the
    DPO adapter's base is one folder that export and inference can load)."""
    path = recipe["model"].get("path")
    if recipe["model"]["kind"] != "pretrained" or not path:
        raise ValueError("train.stage=dpo needs model.kind=pretrained and model.path = the stage-2 model folder")
    path = Path(path).resolve()
    if (path / "adapter_config.json").is_file():
        raise ValueError(f"model.path {path} is a LoRA adapter: merge it first (`dermvqa export {path} --out DIR`) "
                         f"and point model.path at DIR")
    return path


def build_trainer(recipe: dict, resume: bool = False) -> tuple[RecipeDPOTrainer, dict]:
    """The DPO trainer for a recipe with the run folder prepared; returns (trainer, pair counts)."""
    recipe = with_defaults(recipe)
    check_recipe(recipe)
    tr, data, tune = recipe["train"], recipe["data"], recipe["tune"]
    if tune["mode"] != "lora":
        raise ValueError(f"train.stage=dpo trains a LoRA adapter (the reference is the model without it): "
                         f"tune.mode must be lora, got {tune['mode']!r}")
    out = Path(tr["output_dir"])
    if resume and (out / "model").exists():
        raise FileExistsError(f"{out / 'model'} exists: that run finished; nothing to resume")
    path = start_folder(recipe)
    pairs = read_pairs(data["pairs"])
    dpo = tr["dpo"]
    types = dpo["loss_type"] if isinstance(dpo["loss_type"], list) else [dpo["loss_type"]]
    args = training_arguments(recipe, out, DPOConfig, beta=float(dpo["beta"]), loss_type=types,
                              loss_weights=dpo.get("loss_weights"),
                              max_length=None, gradient_checkpointing=float(tr["checkpoint_layers"]) > 0,
                              disable_dropout=True)
    args.num_train_epochs = float(tr["epochs"])
    with args.main_process_first(local=False, desc="run folder"):
        if args.should_save:
            prepare_run_folder(out, resume)
    set_seed(tr["seed"])
    model, processor = load_model(path, recipe)
    skips = SkipLog(out / SKIPPED, len(pairs), float(data["max_skipped_fraction"]))
    rows = tokenize_pairs(pairs, processor, data["max_length"], skips)
    random.Random(tr["seed"]).shuffle(rows)
    lora = tune["lora"]
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias="none",
                             target_modules=lora_targets(model, lora.get("targets", "all-linear")))
    pad = processor.tokenizer.pad_token_id
    trainer = RecipeDPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                               data_collator=PreferenceCollator(data["image_root"], processor.image_processor,
                                                                pad if pad is not None else
                                                                processor.tokenizer.eos_token_id),
                               processing_class=processor, peft_config=peft_config, callbacks=[CompletionMarker()])
    counts = {"pairs_read": len(pairs), "pairs_used": len(rows), "pairs_skipped": skip_summary(out / SKIPPED),
              "by_rule": {r: sum(x["rule"] == r for x in rows) for r in sorted({x["rule"] for x in rows})}}
    if args.should_save:
        write_text_atomic(out / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
        write_text_atomic(out / SUMMARY, json.dumps({"pairs": str(data["pairs"]), "start": str(path), **counts},
                                                    indent=1))
    return trainer, counts


def run_dpo(recipe: dict, resume: bool = False) -> Path:
    """Train the DPO stage as the recipe says; return out/model (a LoRA adapter on the stage-2 folder)."""
    trainer, counts = build_trainer(recipe, resume)
    out = Path(recipe["train"]["output_dir"])
    start = latest_complete(out / "checkpoints", set_aside=False) if resume else None
    say = print if trainer.args.should_save else (lambda *a, **k: None)
    say(f"DPO from {start_folder(recipe)} on {counts['pairs_used']} pairs {counts['by_rule']} "
        f"({counts['pairs_skipped']['count']} skipped): {trainable_summary(trainer.model)}"
        + (f"; resuming from {start}" if start else ""))
    trainer.train(resume_from_checkpoint=str(start) if start else None)
    return save_final(trainer, start_folder(recipe), out)


def save_final(trainer, stage2: Path, out: Path) -> Path:
    """out/model atomically: the adapter, processor, the stage-2 sidecars (labels, OOD summary, data summary:
    tower and projector are unchanged), recipe, pair counts; train_log.json beside it."""
    final, tmp = out / "model", out / ".model-partial"
    if trainer.args.should_save:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if trainer.args.should_save:
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the folder promises safetensors only
        trainer.processing_class.save_pretrained(tmp)
        for side in [*stage2.glob("dermvqa_*"), stage2 / "data_summary.json", out / "recipe.yaml", out / SUMMARY]:
            if side.is_file():
                shutil.copy(side, tmp / side.name)
        honour_umask(tmp)
        os.replace(tmp, final)
        write_text_atomic(out / "train_log.json", json.dumps(trainer.state.log_history, indent=1))
    return final
