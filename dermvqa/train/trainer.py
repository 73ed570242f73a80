"""One training job from a recipe: model, trainable parameters, curriculum-ordered data, transformers.Trainer.

Modes (tune.mode): full, projector (stage 1), lora, qlora (4-bit base). The step is ours (dermvqa/train/step.py):
packed rows, loss on label positions only, bf16 autocast with fp32 master weights, selective activation
checkpointing; DeepSpeed (train.deepspeed) plugs in through TrainingArguments. Checkpoints get a completion marker;
`resume=True` continues from the newest complete one; a finished run writes a standard folder (or a LoRA adapter).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from pathlib import Path

import pyarrow.compute as pc
import torch
import yaml
from transformers import AutoProcessor, LlavaForConditionalGeneration, Trainer, TrainingArguments, set_seed

from data_gen.records import Records, open_records
from atomic_files import honour_umask, write_text_atomic
from dermvqa.data.collator import PaddingCollator
from dermvqa.data.dataset import QADataset
from dermvqa.data.skips import SkipLog, skip_summary
from dermvqa.model.adapter import QUANT_FILE
from dermvqa.model.labels import write_labels
from dermvqa.model.prior import write_prior
from dermvqa.train.checkpoints import (CompletionMarker, latest_complete, load_checkpoint_weights,
                                       zero3_trainable_state_dict)
from dermvqa.train.curriculum import curriculum_order, label_rows, label_vocabulary
from dermvqa.train.ds_env import without_zero3_init, zero3_partitioned
from dermvqa.train.kernels import use_kernels
from dermvqa.train.packing import PackingCollator
from dermvqa.train.preflight import check_images, check_lengths, check_model_folder, check_recipe
from dermvqa.train.step import keep_lora_inputs_in_compute_dtype, label_only_loss, set_checkpointing
from dermvqa.train.tower_pretrain import pretrain_tower
from dermvqa.train.tuning import apply_lora, quantization_config, set_trainable, trainable_summary
from dermvqa.trust.ood import fit_from_records as fit_ood_summary, ood_settings

SKIPPED = "skipped_samples.jsonl"
# Keys older recipes may lack; every shipped recipe spells them out.
DEFAULTS = {"model": {"build": None}, "data": {"cache": False, "max_skipped_fraction": 0.001},
            "tune": {"lora": None, "quant": None, "tower_pretrain": None, "lr_multipliers": {}},
            "train": {"packing": True, "group_by_length": False, "checkpoint_layers": 0.0, "deepspeed": None,
                      "save_total_limit": 2, "max_steps": -1, "attn_implementation": "sdpa", "liger": False}}


def with_defaults(recipe: dict) -> dict:
    recipe = copy.deepcopy(recipe)
    for section, values in DEFAULTS.items():
        for key, value in values.items():
            recipe.setdefault(section, {}).setdefault(key, copy.deepcopy(value))
    return recipe


def model_folder(recipe: dict, records: Records, out_dir: Path) -> Path:
    """The LLaVA folder training starts from; tiny and build kinds are created once under out_dir/init."""
    spec, init = recipe["model"], out_dir / "init"
    if spec["kind"] == "pretrained":
        if not spec.get("path"):
            raise ValueError("model.kind=pretrained needs model.path (a LLaVA folder)")
        return Path(spec["path"]).resolve()
    if (init / "config.json").is_file():
        return init.resolve()
    if spec["kind"] == "tiny":
        from dermvqa.model.tiny import build_tiny_llava
        texts = [q + "\n" + a for q, a in zip(records.column("question").to_pylist(),
                                                records.column("answer").to_pylist())]
        build_tiny_llava(init, texts, seed=recipe["train"]["seed"], **spec["tiny"])
    elif spec["kind"] == "build":
        from dermvqa.model.builder import build_llava, save_build
        b = dict(spec["build"] or {})
        model, processor, info = build_llava(b.pop("vision"), b.pop("llm"), dtype=torch.bfloat16,
                                             seed=recipe["train"]["seed"], **b)
        save_build(model, processor, info, init)
    else:
        raise ValueError(f"model.kind must be tiny, build or pretrained, got {spec['kind']!r}")
    return init.resolve()


def load_model(path: Path, recipe: dict):
    """Load the start model for this mode (4-bit LLM for qlora) and check config against processor."""
    from dermvqa.model.builder import validate_llava

    check_model_folder(path)
    mode, tr = recipe["tune"]["mode"], recipe["train"]
    gpu = torch.cuda.is_available()
    # Frozen weights in bf16 on a GPU; a plain full fine-tune keeps fp32 weights (no master copy otherwise).
    dtype = torch.bfloat16 if gpu and tr["bf16"] and (mode != "full" or tr["deepspeed"]) else torch.float32
    kwargs = {"dtype": dtype}
    if mode == "qlora":
        kwargs["quantization_config"] = quantization_config(recipe["tune"]["quant"])
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0)) if gpu else "cpu"}
    model = LlavaForConditionalGeneration.from_pretrained(path, **kwargs)
    processor = AutoProcessor.from_pretrained(path)
    validate_llava(model.config, processor, str(path))
    return model, processor


def prepare_trainable(model, recipe: dict):
    """Set kernels (dermvqa/train/kernels.py), what trains (LoRA adapters or plain parameters), master weights,
    checkpointing."""
    tune, tr = recipe["tune"], recipe["train"]
    use_kernels(model, tr)
    if tune["mode"] in ("lora", "qlora"):
        lora = tune["lora"]
        model = apply_lora(model, lora["r"], lora["alpha"], lora["dropout"], lora.get("targets", "all-linear"))
    else:
        set_trainable(model, tune["mode"])
    if not tr["deepspeed"]:  # DeepSpeed keeps its own fp32 master copy
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    set_checkpointing(model, float(tr["checkpoint_layers"]))
    if torch.cuda.is_available() and tr["bf16"]:
        keep_lora_inputs_in_compute_dtype(model)
    return model


class RecipeTrainer(Trainer):
    """transformers.Trainer with our loss (label positions only) and per-module learning rates."""

    def __init__(self, *args, lr_multipliers: dict | None = None, **kwargs):
        self.lr_multipliers = lr_multipliers or {}
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = True  # Trainer then counts label tokens over grad-accumulation steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, _ = label_only_loss(model, inputs, num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # the count is global; DDP averages gradients
        return (loss, None) if return_outputs else loss

    def save_model(self, output_dir=None, _internal_call=False):
        zero3 = self.is_deepspeed_enabled and self.deepspeed.zero_optimization_partition_weights()
        if zero3 and hasattr(self.model, "peft_config"):
            t0 = time.perf_counter()
            state = zero3_trainable_state_dict(self.model, self.args.should_save)  # adapter only, not the 7B base
            if self.args.should_save:
                self._save(output_dir or self.args.output_dir, state_dict=state)
                print(f"ZeRO-3 save: gathered {sum(v.numel() for v in state.values()):,} trainable parameters of "
                      f"{sum(p.ds_numel for p in self.model.parameters()):,} in {time.perf_counter() - t0:.2f} s")
            return None
        return super().save_model(output_dir, _internal_call)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers' own loader only warns when keys miss, and misses every key of an old-layout LLaVA save
        load_checkpoint_weights(model or self.model, resume_from_checkpoint)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.lr_multipliers:
            base = self.args.learning_rate
            groups: dict[float, list] = {}
            for name, p in self.model.named_parameters():
                if p.requires_grad:
                    mult = next((m for key, m in self.lr_multipliers.items() if key in name), 1.0)
                    groups.setdefault(base * mult, []).append(p)
            self.optimizer = torch.optim.AdamW([{"params": ps, "lr": lr} for lr, ps in groups.items()], lr=base,
                                               weight_decay=self.args.weight_decay, fused=torch.cuda.is_available())
        return super().create_optimizer()


def training_arguments(recipe: dict, out: Path, cls=TrainingArguments, **extra) -> TrainingArguments:
    tr, gpu = recipe["train"], torch.cuda.is_available()
    if tr["deepspeed"]:
        from dermvqa.train.ds_env import single_process_env, skip_cpu_shm_build
        single_process_env()
        skip_cpu_shm_build()
    return cls(output_dir=str(out / "checkpoints"), per_device_train_batch_size=tr["batch_size"],
        gradient_accumulation_steps=tr["grad_accum"], learning_rate=float(tr["lr"]),
        weight_decay=tr["weight_decay"], warmup_steps=float(tr["warmup_ratio"]), lr_scheduler_type=tr["scheduler"],
        num_train_epochs=1, max_steps=int(tr["max_steps"]), train_sampling_strategy="sequential",
        logging_steps=tr["logging_steps"], save_strategy="steps", save_steps=tr["save_steps"],
        save_total_limit=tr["save_total_limit"], seed=tr["seed"], report_to=tr["report_to"],
        remove_unused_columns=False, dataloader_num_workers=tr["workers"], use_cpu=not gpu,
        bf16=bool(tr["bf16"]) and gpu, max_grad_norm=tr["max_grad_norm"], disable_tqdm=False,
        optim="adamw_torch_fused" if gpu else "adamw_torch", deepspeed=tr["deepspeed"] or None, **extra)


def run_training(recipe: dict, resume: bool = False) -> Path:
    """Train as the recipe says; return the folder of the final model (or LoRA adapter).

    Under a multi-process launcher, process 0 prepares the run folder and builds the start model
    while the others wait (`main_process_first`); output_dir must be on a filesystem all share.
    """
    recipe = with_defaults(recipe)
    check_recipe(recipe)
    ood = ood_settings(recipe.get("ood"))  # checked now, used when the model is saved
    tr, data = recipe["train"], recipe["data"]
    out = Path(tr["output_dir"])
    if resume and (out / "model").exists():
        raise FileExistsError(f"{out / 'model'} exists: that run finished; nothing to resume")
    set_seed(tr["seed"])
    fams = data.get("families", "all")
    records = open_records(data["qa_dir"], split="train", families=fams)  # memory-mapped, shared by workers
    if not len(records):
        raise ValueError(f"no training records in {data['qa_dir']} (families={fams})")
    check_images(records, data["image_root"], int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))
    args = training_arguments(recipe, out)  # sets up the process group when launched with several
    with args.main_process_first(local=False, desc="run folder and start model"):
        if args.should_save:
            prepare_run_folder(out, resume)
            if recipe["tune"]["mode"] == "qlora":  # inference and export load the adapter on this 4-bit base
                write_text_atomic(out / QUANT_FILE, quantization_config(recipe["tune"]["quant"]).to_json_string())
        with without_zero3_init(args):
            path = model_folder(recipe, records, out)
    start = latest_complete(out / "checkpoints", set_aside=False) if resume else None
    say = print if args.should_save else (lambda *a, **k: None)  # one voice under a multi-process launcher
    if resume and start is None:
        say(f"resume: no complete checkpoint in {out / 'checkpoints'}; starting from the beginning")
    stage0 = recipe["tune"].get("tower_pretrain") or {}
    stage0_runs = stage0.get("steps", 0) > 0 and start is None
    # ZeRO-3 loads each rank's partition only (not the whole 7B per rank); stage 0 needs whole weights
    with contextlib.nullcontext() if zero3_partitioned(args) and not stage0_runs else without_zero3_init(args):
        model, processor = load_model(path, recipe)
        too_long = check_lengths(processor, records, data["max_length"], model.config.image_seq_length,
                                 max_skipped_fraction=float(data["max_skipped_fraction"]))
        if too_long:
            say(f"preflight: {too_long} of the longest conversations exceed data.max_length={data['max_length']} "
                f"and will be skipped (listed in {out / SKIPPED} as they come up)")
        if stage0_runs:
            options = {k: stage0[k] for k in ("augment", "balance", "skin_type_balance", "schedule", "label_smoothing")
                       if k in stage0}
            losses = pretrain_tower(model, processor, label_rows(records, "diagnosis"), data["image_root"],
                                    stage0["steps"], float(stage0["lr"]), stage0.get("batch_size", 32), tr["seed"],
                                    **options)
            if args.should_save:
                write_text_atomic(out / "tower_pretrain_log.json", json.dumps(losses))
        set_seed(tr["seed"])  # the same adapter init however the base was loaded
        model = prepare_trainable(model, recipe)
    say(f"training {recipe['tune']['mode']} from {path}: {trainable_summary(model)}"
          + (f"; resuming from {start}" if start else ""))
    group = tr["batch_size"] * tr["grad_accum"] if tr["group_by_length"] else 0
    ordered = records.take(curriculum_order(records, tr["curriculum"], tr["seed"], group))
    skips = SkipLog(out / SKIPPED, len(records), float(data["max_skipped_fraction"]))
    dataset = QADataset(ordered, data["image_root"], processor, data["max_length"], cache=data["cache"],
                        skip_log=skips)
    if args.should_save:
        write_text_atomic(out / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
        write_text_atomic(out / "data_summary.json", json.dumps(
            {"qa_dir": str(data["qa_dir"]), "records": len(records), "examples seen (curriculum)": len(ordered),
             "families": {v["values"]: v["counts"] for v in pc.value_counts(records.column("family")).to_pylist()}},
            indent=1))
    pad = processor.tokenizer.pad_token_id
    collator = (PackingCollator(data["max_length"], pad, model.config.get_text_config()._attn_implementation)
                if tr["packing"] else PaddingCollator(pad))
    trainer = RecipeTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                            processing_class=processor,  # saved into every checkpoint, so each one exports
                            lr_multipliers=recipe["tune"]["lr_multipliers"], callbacks=[CompletionMarker()])
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
            callback.logging_dir = str(out / "tensorboard")  # instead of checkpoints/runs/<date>
    trainer.train(resume_from_checkpoint=str(start) if start else None)
    return save_final(trainer, processor, records, out, ood)


def prepare_run_folder(out: Path, resume: bool) -> None:
    """Before training: a resumed run moves its half-written checkpoints aside; a fresh run in a used output_dir
    moves the old run's folders to out/previous-<time>/ (never deletes)."""
    if resume:
        latest_complete(out / "checkpoints")
    elif old := [out / n for n in ("checkpoints", "model", "init", "tensorboard", SKIPPED) if (out / n).exists()]:
        keep = out / f"previous-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        keep.mkdir(parents=True)
        for folder in old:
            os.replace(folder, keep / folder.name)
        moved = ", ".join(p.name for p in old)
        print(f"{out} held an earlier run; moved {moved} to {keep} (use --resume to continue a run instead)")
    out.mkdir(parents=True, exist_ok=True)


def save_final(trainer, processor, records, out: Path, ood: dict) -> Path:
    """Write out/model atomically: weights (or adapter), processor, labels, OOD summary (`ood`), recipe, log."""
    final, tmp = out / "model", out / ".model-partial"
    if trainer.args.should_save:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # gathers ZeRO-3 shards on every rank
    fit_ood_summary(trainer.model, processor, label_rows(records), trainer.train_dataset.image_root,  # all ranks
                    tmp if trainer.args.should_save else None, **ood)  # dermvqa/trust/ood.py
    if trainer.args.should_save:
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the folder promises safetensors only
        processor.save_pretrained(tmp)
        write_labels(tmp, **label_vocabulary(records))
        write_prior(tmp, [r["label"] for r in label_rows(records, "diagnosis")])  # logit adjustment reads it
        for name in ("recipe.yaml", QUANT_FILE):
            if (out / name).is_file():
                shutil.copy(out / name, tmp / name)
        skipped = skip_summary(out / SKIPPED)
        summary = json.loads((out / "data_summary.json").read_text()) | {"skipped records": skipped}
        (tmp / "data_summary.json").write_text(json.dumps(summary, indent=1))
        if skipped["count"]:
            print(f"skipped {skipped['count']} unusable training records {skipped['by_reason']}; see {out / SKIPPED}")
        honour_umask(tmp)  # safetensors writes its files 0600
        os.replace(tmp, final)
        write_text_atomic(out / "train_log.json", json.dumps(trainer.state.log_history, indent=1))
    return final
