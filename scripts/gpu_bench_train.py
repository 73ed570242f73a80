"""Training-step benchmark: plain transformers+peft, DeepSpeed ZeRO-2, our step, and QLoRA memory.

A random Qwen2.5-7B-shaped LLM (bf16, built from its config) behind a CLIP ViT-B/16 tower at 224
px (196 image tokens), LoRA r 128 on every LLM Linear, projector trainable. Every case trains on
the same batches, whose lengths follow synthesized Derm1M QA; tokens/s counts real (non-pad)
tokens only. Rows print as each case ends; one table closes the run. `--tiny` runs the same
logic on the CPU with tiny shapes (tests/train/test_gpu_bench.py).
Usage: python scripts/gpu_bench_train.py [--tiny] [--budget-s 330] [--batch N]
"""
from __future__ import annotations

import argparse
import gc
import random
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dermvqa.data.collator import PaddingCollator  # noqa: E402
from dermvqa.train.ds_env import single_process_env, skip_cpu_shm_build  # noqa: E402
from dermvqa.train.packing import PackingCollator  # noqa: E402
from dermvqa.train.step import checkpointing  # noqa: E402
from dermvqa.train.tuning import apply_lora, quantization_config  # noqa: E402

QWEN7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
              num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
              tie_word_embeddings=False)
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               image_size=224, patch_size=16, hidden_act="gelu", projection_dim=512)
TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024, tie_word_embeddings=False)
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, hidden_act="gelu", projection_dim=16)
LORA = dict(r=128, alpha=256, dropout=0.05)
BASELINES = ("plain+ckpt", "plain", "zero2+ckpt", "zero2")
GIB = 2 ** 30


def synth_samples(n, rng, n_image, vocab, image_id, scale=1.0, target_len=None, max_len=600):
    """(input_ids, labels) shaped like our Derm1M QA: template + image + question, then the answer.

    Families: closed (yes/no, multiple choice: long question with options, 2-8 answer tokens),
    open (diagnosis, location: 8-40), report (description: 150-350). Totals clip to `max_len`.
    """
    out = []
    while len(out) < n:
        q = rng.randint(20, 120)
        family = rng.random()
        a = rng.randint(2, 8) if family < 0.35 else rng.randint(8, 40) if family < 0.7 else rng.randint(150, 350)
        if target_len is not None:
            a = max(2, target_len - n_image - 30 - q)
        q, a = max(2, int(q * scale)), max(2, int(a * scale))
        head, tail = int(12 * scale) + 1, int(18 * scale) + 1
        prompt = [rng.randrange(10, vocab - 10) for _ in range(head)] + [image_id] * n_image + \
                 [rng.randrange(10, vocab - 10) for _ in range(q + tail)]
        answer = [rng.randrange(10, vocab - 10) for _ in range(a)]
        ids = (prompt + answer)[:max_len]
        labels = [-100] * len(prompt) + ids[len(prompt):]
        out.append((ids, labels))
    return out


def build_model(args, device, dtype):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    text = Qwen2Config(**(TINY_LLM if args.tiny else QWEN7B))
    vision = CLIPVisionConfig(**(TINY_VIT if args.tiny else VIT_B16))
    n_image = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=text.vocab_size - 1,
                         image_seq_length=n_image, vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    return _remember_projector(model).train(), n_image


def _remember_projector(model):
    model._projector_init = {k: v.clone() for k, v in model.model.multi_modal_projector.state_dict().items()}
    return model


def make_batches(args, n_image, vocab, image_id, image_size, batch, target_len=None, seed=0):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    scale = 0.05 if args.tiny else 1.0
    batches = []
    for _ in range(args.warmup + args.steps):
        samples = synth_samples(batch, rng, n_image, vocab, image_id, scale, target_len,
                                max_len=n_image + 40 if args.tiny else 600)
        batches.append([{"input_ids": ids, "labels": lab,
                         "pixel_values": torch.randn(3, image_size, image_size, generator=g)} for ids, lab in samples])
    return batches


def to_device(batch, device, dtype):
    return {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device) if torch.is_tensor(v) else v)
            for k, v in batch.items()}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed_loop(step, batches, collate, device, dtype, warmup, deadline):
    """Run warmup + measured steps (stopping at `deadline`); return (real tokens, seconds, steps)."""
    tokens, seconds, done = 0, 0.0, 0
    for i, examples in enumerate(batches):
        batch = collate(examples)
        n = sum(len(e["input_ids"]) for e in examples)  # real tokens, whatever the collator pads
        sync(device)
        t0 = time.perf_counter()
        step(to_device(batch, device, dtype))
        sync(device)
        if i >= warmup:
            tokens, seconds, done = tokens + n, seconds + time.perf_counter() - t0, done + 1
        if time.perf_counter() > deadline and done:
            break
    return tokens, seconds, done


def fused_adamw(params, lr, device):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=device == "cuda")


def plain_case(model, batches, args, device, dtype, deadline, ckpt, autocast=False):
    """transformers + peft as documented: padded batch, model(labels=...), fp32 adapters, torch AdamW."""
    pm = apply_lora(model, **LORA)
    if ckpt:
        pm.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = fused_adamw([p for p in pm.parameters() if p.requires_grad], 2e-4, device)
    ctx = torch.autocast(device, dtype=torch.bfloat16) if autocast else nullcontext()

    def step(batch):
        with ctx:
            loss = pm(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in pm.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        return timed_loop(step, batches, PaddingCollator(0), device, dtype, args.warmup, deadline)
    finally:
        _undo(pm, model)


def zero2_case(model, batches, args, device, dtype, deadline, ckpt):
    """The same model and loss under a single-process DeepSpeed ZeRO-2 engine (bf16 on GPU)."""
    import deepspeed

    single_process_env()
    skip_cpu_shm_build()
    pm = apply_lora(model, **LORA)
    if ckpt:
        pm.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in pm.parameters() if p.requires_grad]
    config = {"train_micro_batch_size_per_gpu": len(batches[0]), "gradient_accumulation_steps": 1,
              "gradient_clipping": 1.0, "bf16": {"enabled": device == "cuda"}, "steps_per_print": 10 ** 9,
              "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}}
    engine, *_ = deepspeed.initialize(model=pm, optimizer=fused_adamw(params, 2e-4, device), config=config)

    def step(batch):
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()

    try:
        return timed_loop(step, batches, PaddingCollator(0), device, dtype, args.warmup, deadline)
    finally:
        if hasattr(engine, "destroy"):
            engine.destroy()
        _undo(pm, model)


def ours_case(model, batches, args, device, deadline, fraction, recipe_name="stage2_lora"):
    """Our step exactly as `dermvqa train` runs it: a stage-2 recipe through RecipeTrainer.

    Packed rows, loss on label positions only, fp32 master adapters computed in bf16 under
    autocast, fused AdamW, checkpointing on `fraction` of the LLM layers; timed by a callback.
    """
    from transformers import TrainerCallback

    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import RecipeTrainer, prepare_trainable, training_arguments, with_defaults

    out = Path(tempfile.mkdtemp(prefix="dermvqa_bench_run_"))
    recipe = with_defaults(load_recipe(REPO / "configs" / "qwen2.5-7b" / f"{recipe_name}.yaml", [
        f"train.output_dir={out}", f"train.batch_size={len(batches[0])}", "train.grad_accum=1",
        "train.deepspeed=null", f"train.checkpoint_layers={fraction}", "train.save_steps=100000",
        "train.logging_steps=100000", "train.report_to=[]", "train.workers=0", f"train.bf16={device == 'cuda'}"]))
    pm = prepare_trainable(model, recipe)
    timing = {"tokens": 0, "seconds": 0.0, "steps": 0}

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            sync(device)
            i = state.global_step - 1
            if i >= args.warmup:
                n = sum(len(e["input_ids"]) for e in batches[i])
                timing.update(tokens=timing["tokens"] + n, seconds=timing["seconds"] + time.perf_counter() - self.t0,
                              steps=timing["steps"] + 1)
            control.should_training_stop = time.perf_counter() > deadline and timing["steps"] > 0
            return control

    dataset = [e for b in batches for e in b]
    trainer = RecipeTrainer(model=pm, args=training_arguments(recipe, out), train_dataset=dataset,
                            data_collator=PackingCollator(recipe["data"]["max_length"]),
                            lr_multipliers=recipe["tune"]["lr_multipliers"], callbacks=[Timer()])
    try:
        trainer.train()
        params = [p for p in pm.parameters() if p.requires_grad]
        return (timing["tokens"], timing["seconds"], timing["steps"]), _note(pm, params)
    finally:
        del trainer
        shutil.rmtree(out, ignore_errors=True)
        _undo(pm, model)


def _undo(pm, model):
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

    quant = load_recipe(REPO / "configs" / "qwen2.5-7b" / "stage2_qlora.yaml")["tune"]["quant"]
    if device == "cpu":
        quant = {**quant, "compute_dtype": "float32"}
    quant = quantization_config(quant)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # as load_model chooses
    return _remember_projector(LlavaForConditionalGeneration.from_pretrained(
        path, quantization_config=quant, dtype=dtype, device_map={"": 0 if device == "cuda" else "cpu"}))


def qlora_naive_case(model, batches, args, device, deadline, train_mode=True):
    """The naive QLoRA stack: checkpointing switched on, LoRA, padded batch with full-vocabulary logits.

    from_pretrained returns the model in eval mode; a loop that never calls .train() keeps it there,
    and transformers then checkpoints nothing (it only checkpoints in training mode).
    """
    model.train(train_mode)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pm = apply_lora(model, **LORA)
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = fused_adamw(params, 2e-4, device)

    def step(batch):
        pm(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        return timed_loop(step, batches, PaddingCollator(0), device, model.dtype, args.warmup, deadline), \
            _note(pm, params)
    finally:
        _undo(pm, model)


def _note(pm, params):
    layers = pm.get_base_model().model.language_model.layers
    checkpointed = sum(bool(getattr(layer, "gradient_checkpointing", False)) and layer.training for layer in layers)
    trainable = sum(p.numel() for p in params) / 1e6
    return f"{checkpointed} of {len(layers)} LLM layers checkpointed, trainable {trainable:.1f}M"


def _allocated(device):
    return torch.cuda.memory_allocated() / GIB if device == "cuda" else float("nan")


def _reset_peak(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device):
    return torch.cuda.max_memory_allocated() / GIB if device == "cuda" else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (tests the logic)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting cases after this many seconds")
    ap.add_argument("--case-s", type=float, default=30.0, help="measuring time per case")
    ap.add_argument("--batch", type=int, default=0, help="examples per step (0: 16 on >100 GiB GPUs, else 8)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--qlora-batch", type=int, default=4)
    ap.add_argument("--qlora-reserve-s", type=float, default=110.0,
                    help="seconds of the budget kept for saving, 4-bit loading and the QLoRA cases")
    ap.add_argument("--skip", nargs="*", default=[], help="case names to skip")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    start = time.perf_counter()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # as shipped; fp32 LoRA matmuls pay for it
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    mem = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 0
    batch = args.batch or (16 if mem > 100 else 8) if device == "cuda" else (args.batch or 4)
    model, n_image = build_model(args, device, dtype)
    vcfg, tcfg = model.config.vision_config, model.config.text_config
    batches = make_batches(args, n_image, tcfg.vocab_size, model.config.image_token_id, vcfg.image_size, batch)
    lengths = [len(e["input_ids"]) for b in batches for e in b]
    print(f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'} ({mem:.0f} GiB), "
          f"torch {torch.__version__}; LLM {tcfg.num_hidden_layers}x{tcfg.hidden_size}, vocab {tcfg.vocab_size}; "
          f"{n_image} image tokens; batch {batch}; lengths mean {sum(lengths) / len(lengths):.0f} "
          f"min {min(lengths)} max {max(lengths)}; build {time.perf_counter() - start:.0f}s", flush=True)
    rows = []

    def run(name, fn, *fargs, reserve=0.0, **fkw):
        """One case; it is not started when fewer than 5 s (+ `reserve` kept for later cases) are left."""
        if name in args.skip:
            return
        left = args.budget_s - reserve - (time.perf_counter() - start)
        if left < 5:
            rows.append((name, None, None, None, "skipped: time budget spent"))
            print(f"{name:<22} skipped: time budget spent", flush=True)
            return
        gc.collect()  # the previous case's engine/optimizer may sit in reference cycles
        if device == "cuda":
            torch.cuda.empty_cache()
        _reset_peak(device)
        note = ""
        try:
            deadline = time.perf_counter() + min(args.case_s, left)
            result = fn(*fargs, deadline=deadline, **fkw)
            if isinstance(result[1], str):
                result, note = result
            tokens, seconds, steps = result
            row = (name, tokens / seconds, _peak(device), steps, note)
        except Exception as e:  # one failing case must not hide the others
            row = (name, None, _peak(device), None, f"error: {type(e).__name__}: {str(e).splitlines()[0][:150]}")
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        tps = f"{row[1]:,.0f} tok/s" if row[1] else "-"
        peak = f"{row[2]:.1f} GiB" if row[2] == row[2] else "-"
        print(f"{name:<22} {tps:>14}  peak {peak}  steps {row[3]}  {row[4]}  "
              f"[{time.perf_counter() - start:.0f}s]", flush=True)

    keep = args.qlora_reserve_s
    run("plain+ckpt", plain_case, model, batches, args, device, dtype, ckpt=True, reserve=keep)
    run("zero2", zero2_case, model, batches, args, device, dtype, ckpt=False, reserve=keep)
    run("ours", ours_case, model, batches, args, device, fraction=0.0, reserve=keep)
    if rows and rows[-1][0] == "ours" and rows[-1][4].startswith("error"):  # e.g. out of memory: checkpoint half
        run("ours (ckpt 1/2)", ours_case, model, batches, args, device, fraction=0.5, reserve=keep)
    run("zero2+ckpt", zero2_case, model, batches, args, device, dtype, ckpt=True, reserve=keep)
    run("plain", plain_case, model, batches, args, device, dtype, ckpt=False, reserve=keep)
    run("plain+ckpt+autocast", plain_case, model, batches, args, device, dtype, ckpt=True, autocast=True,
        reserve=keep)
    run("ours (ckpt all)", ours_case, model, batches, args, device, fraction=1.0, reserve=keep)

    qbatches = make_batches(args, n_image, tcfg.vocab_size, model.config.image_token_id, vcfg.image_size,
                            args.qlora_batch, target_len=450, seed=1)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 40 * GIB else None
    folder = Path(tempfile.mkdtemp(prefix="dermvqa_bench_", dir=shm))
    try:
        if all(f"qlora {k}" in args.skip for k in ("naive", "naive+train", "ours")):
            return rows
        t0 = time.perf_counter()
        model.save_pretrained(folder)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        t1 = time.perf_counter()
        qmodel = load_4bit(folder, device)
        print(f"saved the bf16 model in {t1 - t0:.0f}s, loaded it in 4-bit in {time.perf_counter() - t1:.0f}s "
              f"({_allocated(device):.1f} GiB)", flush=True)
        run("qlora naive", qlora_naive_case, qmodel, qbatches, args, device, train_mode=False)
        run("qlora naive+train", qlora_naive_case, qmodel, qbatches, args, device, train_mode=True)
        run("qlora ours", ours_case, qmodel, qbatches, args, device, fraction=1.0, recipe_name="stage2_qlora")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        print_table(rows, batch, args.qlora_batch)
    return rows


def print_table(rows, batch, qbatch):
    base = [r[1] for r in rows if r[0] in BASELINES and r[1]]
    best = max(base) if base else None
    print("\n| case | tokens/s | x best baseline | peak GiB | note |\n|---|---|---|---|---|")
    for name, tps, peak, steps, note in rows:
        ratio = f"{tps / best:.2f}" if tps and best and not name.startswith("qlora") else "-"
        shown = f"{tps:,.0f}" if tps else "-"
        peak_s = f"{peak:.1f}" if peak == peak and peak is not None else "-"
        print(f"| {name} | {shown} | {ratio} | {peak_s} | {note} |")
    print(f"\nbf16 cases: batch {batch}, QLoRA: batch {qbatch} x ~450 tokens; best baseline = "
          f"max over {', '.join(BASELINES)} = {best and f'{best:,.0f}'} tok/s (real tokens only)")


if __name__ == "__main__":
    main()
