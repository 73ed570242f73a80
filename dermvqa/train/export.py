"""`dermvqa export`: a training result -> one standard LlavaForConditionalGeneration folder + model card.

Input: a LoRA/QLoRA adapter folder (final `model/` or a `checkpoint-N`), or a full-model folder.
LoRA is merged offline here, in one process on the CPU (or one GPU), never under ZeRO-3 where
merging yields empty tensors. The output loads with plain transformers (no dermvqa, no peft):
`LlavaForConditionalGeneration.from_pretrained(out)` + `AutoProcessor.from_pretrained(out)`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from atomic_files import honour_umask
from dermvqa.model.adapter import adapter_base, find_quantization, load_adapter_model
from dermvqa.model.generation import model_greedy_config

PROBE_QUESTIONS = ["What is the most likely diagnosis?", "Is this melanoma?", "Describe the morphology of this lesion."]

LICENCE = ("Derm1M and DermLIP are released under CC BY-NC 4.0, so these weights (trained on Derm1M-derived "
           "questions with a DermLIP vision tower) are for non-commercial research only; the LLM keeps its "
           "own licence as well.")


def _processor_dir(source: Path, base: str | None) -> Path | str:
    for folder in (source, source.parent):
        if (folder / "processor_config.json").is_file() or (folder / "preprocessor_config.json").is_file():
            return folder
    if base is None:
        raise FileNotFoundError(f"{source}: no processor files here and no base model to take them from")
    return base


def load_for_export(source: str | Path, dtype=torch.float32):
    """Return (merged LlavaForConditionalGeneration, processor, description of what was merged)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a folder")
    adapter = source / "adapter_config.json"
    if adapter.is_file():
        base = adapter_base(source)
        if not (source / "adapter_model.safetensors").is_file():
            raise FileNotFoundError(f"{source}: adapter_config.json without adapter_model.safetensors "
                                    f"(half-written checkpoint?)")
        model = load_adapter_model(source, dtype, merge=True)
        processor = AutoProcessor.from_pretrained(_processor_dir(source, base))
        what = f"LoRA adapter {source} merged into {base}"
        if find_quantization(source) is not None:
            error = merge_error(source, model, processor)
            what = (f"QLoRA adapter {source} (trained on a 4-bit base) merged into the unquantised {base}; "
                    f"merging changes the logits by up to {error:.4g} (max absolute difference from the trained "
                    f"4-bit model + adapter on a probe batch of {len(PROBE_QUESTIONS)} questions x 2 images)")
            print(what)
    elif (source / "config.json").is_file():
        model = LlavaForConditionalGeneration.from_pretrained(source, dtype=dtype)
        processor = AutoProcessor.from_pretrained(_processor_dir(source, None))
        what = f"full model {source}"
    else:
        hint = f"; the run's final model is {source / 'model'}" if (source / "model").is_dir() else ""
        raise FileNotFoundError(f"{source}: neither adapter_config.json nor config.json (not a training output{hint})")
    leftovers = [n for n, _ in model.named_modules() if "lora_" in n or n.endswith("base_layer")]
    if leftovers:
        raise RuntimeError(f"merge left adapter modules behind: {leftovers[:3]}")
    return model.eval(), processor, what


@torch.no_grad()
def merge_error(source: Path, merged, processor) -> float:
    """Max |logit difference| between the trained 4-bit base + adapter and the merged model on a probe batch."""
    from PIL import Image

    from dermvqa.data.conversation import user_turn

    trained = load_adapter_model(source, merged.dtype, merge=False).eval()
    gen = torch.Generator().manual_seed(0)
    images = [Image.fromarray(torch.randint(0, 256, (64, 64, 3), generator=gen, dtype=torch.uint8).numpy())
              for _ in range(2)]
    worst = 0.0
    for image in images:
        for q in PROBE_QUESTIONS:
            prompt = processor.apply_chat_template([user_turn(q)], add_generation_prompt=True, tokenize=False)
            enc = processor(images=[image], text=[prompt], add_special_tokens=False, return_tensors="pt")
            enc["pixel_values"] = enc["pixel_values"].to(merged.dtype)
            diff = (trained(**enc).logits.float() - merged(**enc).logits.float()).abs().max().item()
            worst = max(worst, diff)
    return worst


def model_card(model, what: str, recipe_text: str | None, data_summary: dict | None) -> str:
    c = model.config
    vision, text = c.vision_config, c.text_config
    data = "\n".join(f"- {k}: {v}" for k, v in (data_summary or {}).items()) or "- not recorded with this model"
    recipe = f"```yaml\n{recipe_text.strip()}\n```" if recipe_text else "not recorded with this model"
    return f"""---
license: cc-by-nc-4.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [dermatology, llava, vqa, dermvqa]
---
# dermvqa model

A LLaVA-style dermatology visual-question-answering model: a {vision.model_type} vision tower
({vision.num_hidden_layers} layers, {vision.image_size} px, {c.image_seq_length} image tokens) joined by a
projector ({c.projector_hidden_act}) to a {text.model_type} language model ({text.num_hidden_layers} layers,
hidden size {text.hidden_size}). Exported from: {what}.

Load it with plain transformers:

```python
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration
model = LlavaForConditionalGeneration.from_pretrained("PATH")
processor = AutoProcessor.from_pretrained("PATH")
question = "What is the most likely diagnosis?"
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": question}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
# the rendered prompt already holds every special token (bos included): add none when tokenizing
inputs = processor(images=Image.open("lesion.jpg").convert("RGB"), text=prompt, add_special_tokens=False,
                   return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

## Training data
Question-answer pairs synthesised by dermvqa's data_gen from Derm1M-format captions and the Derm1M
ontology (diagnosis, ontology category, multiple choice with sibling distractors, yes/no with hard
negatives, morphology, body location, symptoms, caption reports).
{data}

## Recipe
{recipe}

## Licence
{LICENCE}

## Intended use
Research on dermatology visual question answering: benchmarking, studying failure modes and
fairness across skin types, and as a starting point for further fine-tuning. Not a medical device.

## Limitations
- Not validated clinically; answers can be wrong or invented and must never guide diagnosis or treatment.
- Training questions are generated from captions and an ontology, not written by dermatologists; they
  inherit caption errors and the label noise of web, textbook and forum sources.
- Derm1M over-represents some sources and lighter skin types; check results per Fitzpatrick type.
- One image per question at {vision.image_size} px; fine detail (dermoscopic structures) may be lost.
"""


def export(source: str | Path, out: str | Path, dtype: str = "float32", recipe_path: str | None = None) -> Path:
    """Merge and save `source` into `out` atomically; returns `out`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty")
    model, processor, what = load_for_export(source, getattr(torch, dtype))
    source = Path(source)
    recipe = Path(recipe_path) if recipe_path else next(
        (p for p in (source / "recipe.yaml", source.parent / "recipe.yaml", source.parent.parent / "recipe.yaml")
         if p.is_file()), None)
    summary = next((p for p in (source / "data_summary.json", source.parent / "data_summary.json",
                                source.parent.parent / "data_summary.json") if p.is_file()), None)
    sidecars = sorted(source.glob("dermvqa_*"))  # labels, OOD summary, referral level: fit on these very weights
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # greedy, with the family's stop ids, whatever the LLM's own (sampling) config said
    model.generation_config = model_greedy_config(model, processor.tokenizer, max_new_tokens=256)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        card = model_card(model, what, recipe.read_text() if recipe else None,
                          json.loads(summary.read_text()) if summary else None)
        (tmp / "README.md").write_text(card)
        if recipe:
            shutil.copy(recipe, tmp / "recipe.yaml")
        if summary:  # its trained families decide which report sections the model may answer
            shutil.copy(summary, tmp / "data_summary.json")
        for sidecar in sidecars:
            shutil.copy(sidecar, tmp / sidecar.name)
        honour_umask(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
