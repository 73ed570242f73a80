"""The cases dermvqa.bench.gpu_bench_train times: each trains the shared base model for a few steps, then undoes itself.

Every case returns ((real tokens, seconds, measured steps), note). With `profile`, the last warmup
step (never timed) runs under torch.profiler and the kernels that took the most device time print,
so one GPU run says where a slow case spends its step.
"""
from __future__ import annotations

import gc
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from dermvqa.bench.gpu_bench_timing import sync, timed_loop
from dermvqa.data.collator import PaddingCollator
from dermvqa.train.ds_env import single_process_env, skip_cpu_shm_build
from dermvqa.train.packing import PackingCollator
from dermvqa.train.step import checkpointing
from dermvqa.train.tuning import apply_lora, quantization_config

LORA = dict(r=128, alpha=256, dropout=0.05)


def remember_projector(model):
    model._projector_init = {k: v.clone() for k, v in model.model.multi_modal_projector.state_dict().items()}
    return model


def fused_adamw(params, lr, device):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=device == "cuda")


def with_lora(model, ckpt):
    """The baselines' peft model (LoRA + trainable projector, transformers' checkpointing when `ckpt`) and its
    trainable parameters."""
    pm = apply_lora(model, **LORA)
    if ckpt:
        pm.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return pm, [p for p in pm.parameters() if p.requires_grad]


def plain_case(model, batches, args, device, dtype, deadline, profiler, ckpt, autocast=False):
    """transformers + peft as documented: padded batch, model(labels=...), fp32 adapters, torch AdamW."""
    pm, params = with_lora(model, ckpt)
    opt = fused_adamw(params, 2e-4, device)
    ctx = torch.autocast(device, dtype=torch.bfloat16) if autocast else nullcontext()

    def step(batch):
        with ctx:
            loss = pm(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        return timed_loop(step, batches, PaddingCollator(0), device, dtype, args.warmup, deadline, profiler), \
            note(pm, params)
    finally:
        undo(pm, model)


def zero2_case(model, batches, args, device, dtype, deadline, profiler, ckpt):
    """The same model and loss under a single-process DeepSpeed ZeRO-2 engine (bf16 on GPU)."""
    import deepspeed

    single_process_env()
    skip_cpu_shm_build()
    pm, params = with_lora(model, ckpt)
    config = {"train_micro_batch_size_per_gpu": len(batches[0]), "gradient_accumulation_steps": 1,
              "gradient_clipping": 1.0, "bf16": {"enabled": device == "cuda"}, "steps_per_print": 10 ** 9,
              "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}}
    engine, *_ = deepspeed.initialize(model=pm, optimizer=fused_adamw(params, 2e-4, device), config=config)

    def step(batch):
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()

    try:
        return timed_loop(step, batches, PaddingCollator(0), device, dtype, args.warmup, deadline, profiler), \
            note(pm, params)
    finally:
        if hasattr(engine, "destroy"):
            engine.destroy()
        undo(pm, model)


def ours_case(model, batches, args, device, dtype, deadline, profiler, fraction, deepspeed=True,
              recipe_name="stage2_lora", overrides=(), warmup=None):
    """Our step exactly as `dermvqa train` runs it on one GPU: a stage-2 recipe through RecipeTrainer.

    Packed rows, loss on label positions only, fused AdamW, checkpointing on `fraction` of the LLM
    layers; with `deepspeed` inside the ZeRO-2 engine (bf16 weights, fp32 master copy in the
    optimizer), else fp32 master adapters computed in bf16 under autocast. `overrides` are further
    recipe settings (train.attn_implementation, train.liger); `warmup` untimed steps (default
    args.warmup) leave room for compiling. Timed by a callback.
    """
    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import prepare_trainable, with_defaults

    out = Path(tempfile.mkdtemp(prefix="dermvqa_bench_run_"))
    recipe = with_defaults(load_recipe(f"qwen2.5-7b/{recipe_name}", [
        f"train.output_dir={out}", f"train.batch_size={len(batches[0])}", "train.grad_accum=1",
        f"train.deepspeed={'deepspeed/zero2' if deepspeed else 'null'}", f"train.checkpoint_layers={fraction}",
        "train.save_steps=100000", "train.logging_steps=100000", "train.report_to=[]", "train.workers=0",
        f"train.bf16={device == 'cuda'}", *overrides]))
    warmup = args.warmup if warmup is None else warmup
    with kernels_restored(model):
        pm = prepare_trainable(model, recipe)
        return _train_ours(pm, model, recipe, batches, device, deadline, profiler, warmup, out, deepspeed)


def _train_ours(pm, model, recipe, batches, device, deadline, profiler, warmup, out, deepspeed):
    from transformers import TrainerCallback

    from dermvqa.train.trainer import RecipeTrainer, training_arguments

    timing = {"tokens": 0, "seconds": 0.0, "steps": 0}

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == warmup - 1:
                profiler.start()
            sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            sync(device)
            i = state.global_step - 1
            if i == warmup - 1:
                profiler.stop()
            if i >= warmup:
                n = sum(len(e["input_ids"]) for e in batches[i])
                timing.update(tokens=timing["tokens"] + n, seconds=timing["seconds"] + time.perf_counter() - self.t0,
                              steps=timing["steps"] + 1)
            control.should_training_stop = time.perf_counter() > deadline and timing["steps"] > 0
            return control

    dataset = [e for b in batches for e in b]
    kind = pm.get_base_model().config.get_text_config()._attn_implementation
    trainer = RecipeTrainer(model=pm, args=training_arguments(recipe, out), train_dataset=dataset,
                            data_collator=PackingCollator(recipe["data"]["max_length"], attn_implementation=kind),
                            lr_multipliers=recipe["tune"]["lr_multipliers"], callbacks=[Timer()])
    try:
        trainer.train()
        params = [p for p in pm.parameters() if p.requires_grad]
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
        liger = sum(m._get_name().startswith("Liger") for m in pm.get_base_model().modules())
        return (timing["tokens"], timing["seconds"], timing["steps"]), \
            f"{note(pm, params)}, trainable dtype {'/'.join(dtypes)}, {kind}" + \
            (f", {liger} Liger modules" if liger else "") + (", ZeRO-2" if deepspeed else "")
    finally:
        engine = getattr(trainer, "model_wrapped", None)
        if engine is not None and hasattr(engine, "destroy"):
            engine.destroy()
        del trainer
        shutil.rmtree(out, ignore_errors=True)
        undo(pm, model)


@contextmanager
def kernels_restored(model):
    """After a case: the LLM back on sdpa and Liger's patches gone (the forwards it binds on LLM modules and
    the names it rebinds in the LLM's modeling module, RoPE and classes), so later cases and the 4-bit
    model built from that module run as before."""
    llm = model.model.language_model
    family = sys.modules[type(llm).__module__]
    names = dict(vars(family))
    try:
        yield
    finally:
        vars(family).update(names)
        for m in llm.modules():
            if "_get_name" in vars(m):
                for attr in ("forward", "_get_name", "extra_repr"):
                    vars(m).pop(attr, None)
        model.set_attn_implementation({"text_config": "sdpa"})


def undo(pm, model):
    """Remove adapters and checkpointing so the next case starts from the same base model.

    unload() keeps the trained projector copy, which an engine may have hooked or re-pointed into
    its flat buffers; a fresh projector with the original weights replaces it.
    """
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    base = pm.unload()
    assert base is model
    old = base.model.multi_modal_projector
    fresh = LlavaMultiModalProjector(base.config).to(old.linear_1.weight.device, old.linear_1.weight.dtype)
    fresh.load_state_dict(base._projector_init)
    base.model.multi_modal_projector = fresh.requires_grad_(False)
    checkpointing(base, False)
    base.train()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_4bit(path, device):
    """The saved model loaded as the QLoRA recipe loads it (dermvqa.train.trainer.load_model, minus the
    processor the random benchmark model lacks): LLM Linears in NF4, vision/projector/lm_head in bf16."""
    from transformers import LlavaForConditionalGeneration

    from dermvqa.train.recipe import load_recipe

    quant = load_recipe("qwen2.5-7b/stage2_qlora")["tune"]["quant"]
    if device == "cpu":
        quant = {**quant, "compute_dtype": "float32"}
    quant = quantization_config(quant)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # as load_model chooses
    return remember_projector(LlavaForConditionalGeneration.from_pretrained(
        path, quantization_config=quant, dtype=dtype, device_map={"": 0 if device == "cuda" else "cpu"}))


def qlora_naive_case(model, batches, args, device, dtype, deadline, profiler, train_mode=True):
    """The naive QLoRA stack: the plain step (checkpointing on, LoRA, padded full-vocabulary logits) on 4 bits.

    from_pretrained returns the model in eval mode; a loop that never calls .train() keeps it there,
    and transformers then checkpoints nothing (it only checkpoints in training mode).
    """
    model.train(train_mode)
    return plain_case(model, batches, args, device, dtype, deadline, profiler, ckpt=True)


def note(pm, params):
    layers = pm.get_base_model().model.language_model.layers
    checkpointed = sum(bool(getattr(layer, "gradient_checkpointing", False)) and layer.training for layer in layers)
    trainable = sum(p.numel() for p in params) / 1e6
    return f"{checkpointed} of {len(layers)} LLM layers checkpointed, trainable {trainable:.1f}M"
