"""One training job from a recipe: model, trainable parameters, curriculum-ordered data, transformers.Trainer."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from transformers import (AutoProcessor, LlavaForConditionalGeneration, Trainer, TrainingArguments,
                          set_seed)

from data_gen.records import read_records
from dermvqa.data.collator import PaddingCollator
from dermvqa.data.dataset import QADataset
from dermvqa.train.tower_pretrain import pretrain_tower

LABELS_FILE = "dermvqa_labels.json"


def build_model(recipe: dict, records: list[dict], out_dir: Path):
    """Random-init tiny model (tokenizer trained on the QA text) or a built LLaVA folder."""
    spec = recipe["model"]
    if spec["kind"] == "tiny":
        from dermvqa.model.tiny import build_tiny_llava
        texts = [r["question"] + "\n" + r["answer"] for r in records]
        return build_tiny_llava(out_dir / "init", texts, seed=recipe["train"]["seed"], **spec["tiny"])
    if spec["kind"] == "pretrained":
        path = Path(spec["path"])
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model.path {path} is not a LLaVA folder (no config.json)")
        return LlavaForConditionalGeneration.from_pretrained(path), AutoProcessor.from_pretrained(path)
    raise ValueError(f"model.kind must be 'tiny' or 'pretrained', got {spec['kind']!r}")


def set_trainable(model, mode: str) -> None:
    """full: everything; projector: the projector only (stage 1)."""
    if mode not in ("full", "projector"):
        raise ValueError(f"tune.mode must be 'full' or 'projector', got {mode!r}")
    for name, p in model.named_parameters():
        p.requires_grad = mode == "full" or "multi_modal_projector" in name


def curriculum_order(records: list[dict], phases: list[dict], seed: int) -> list[dict]:
    """Concatenate phases; each phase repeats its families' records `epochs` times, shuffled per epoch."""
    rng = random.Random(seed)
    ordered = []
    for i, phase in enumerate(phases):
        fams = phase.get("families", "all")
        subset = [r for r in records if fams == "all" or r["family"] in fams]
        if not subset:
            raise ValueError(f"curriculum phase {i} selects no records (families={fams})")
        for _ in range(int(phase["epochs"])):
            rng.shuffle(subset)
            ordered.extend(subset)
    return ordered


def label_vocabulary(records: list[dict]) -> dict:
    """What the model was trained to name: diagnoses with their ontology paths, and concepts."""
    dx = {r["label"]: r["ontology_path"] for r in records if r["family"] == "diagnosis"}
    concepts = sorted({o for r in records if r["family"] == "morphology" for o in r["options"]})
    return {"diagnoses": sorted(dx), "ontology_paths": dx, "concepts": concepts}


class RecipeTrainer(Trainer):
    """transformers.Trainer with per-module learning rates (`tune.lr_multipliers`)."""

    def __init__(self, *args, lr_multipliers: dict | None = None, **kwargs):
        self.lr_multipliers = lr_multipliers or {}
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.lr_multipliers:
            base = self.args.learning_rate
            groups: dict[float, list] = {}
            for name, p in self.model.named_parameters():
                if p.requires_grad:
                    mult = next((m for key, m in self.lr_multipliers.items() if key in name), 1.0)
                    groups.setdefault(base * mult, []).append(p)
            self.optimizer = torch.optim.AdamW([{"params": ps, "lr": lr} for lr, ps in groups.items()],
                                               lr=base, weight_decay=self.args.weight_decay)
        return super().create_optimizer()


def run_training(recipe: dict) -> Path:
    """Train as the recipe says; return the folder of the final, standard-format model."""
    tr, data = recipe["train"], recipe["data"]
    out = Path(tr["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    set_seed(tr["seed"])
    records = read_records(data["qa_dir"], split="train")
    fams = data.get("families", "all")
    records = [r for r in records if fams == "all" or r["family"] in fams]
    if not records:
        raise ValueError(f"no training records in {data['qa_dir']} (families={fams})")
    model, processor = build_model(recipe, records, out)
    stage0 = recipe["tune"].get("tower_pretrain") or {}
    if stage0.get("steps", 0) > 0:
        losses = pretrain_tower(model, processor, records, data["image_root"], stage0["steps"], float(stage0["lr"]),
                                stage0.get("batch_size", 32), tr["seed"])
        (out / "tower_pretrain_log.json").write_text(json.dumps(losses))
    set_trainable(model, recipe["tune"]["mode"])
    ordered = curriculum_order(records, tr["curriculum"], tr["seed"])
    dataset = QADataset(ordered, data["image_root"], processor, data["max_length"], cache=data["cache"])
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=tr["batch_size"],
        gradient_accumulation_steps=tr["grad_accum"], learning_rate=float(tr["lr"]),
        weight_decay=tr["weight_decay"], warmup_steps=float(tr["warmup_ratio"]), lr_scheduler_type=tr["scheduler"],
        num_train_epochs=1, train_sampling_strategy="sequential", logging_steps=tr["logging_steps"],
        save_steps=tr["save_steps"], save_total_limit=2, seed=tr["seed"], report_to=tr["report_to"],
        remove_unused_columns=False, dataloader_num_workers=tr["workers"],
        use_cpu=not torch.cuda.is_available(), bf16=tr["bf16"] and torch.cuda.is_available(),
        max_grad_norm=tr["max_grad_norm"], disable_tqdm=False,
    )
    trainer = RecipeTrainer(model=model, args=args, train_dataset=dataset,
                            data_collator=PaddingCollator(processor.tokenizer.pad_token_id),
                            lr_multipliers=recipe["tune"].get("lr_multipliers"))
    trainer.train()
    final = out / "model"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    (final / LABELS_FILE).write_text(json.dumps(label_vocabulary(records), indent=1))
    (out / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return final
