"""Load a trained model (exported folder or base + LoRA adapter) and answer questions greedily in batches."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from dermvqa.data.conversation import user_turn
from dermvqa.model.adapter import adapter_base, find_quantization, load_adapter_model
from dermvqa.model.generation import model_greedy_config


def load_model(path: str | Path, device: str | None = None, dtype: torch.dtype | None = None):
    """Return (model, processor). A folder with adapter_config.json is a LoRA (merged) or QLoRA (kept on its
    4-bit base) adapter on its base model."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    if (path / "adapter_config.json").exists():  # a QLoRA adapter stays on its 4-bit base, as trained
        model = load_adapter_model(path, dtype, device)
        proc_dir = path if (path / "processor_config.json").exists() else adapter_base(path)
        if find_quantization(path) is not None:
            return model.eval(), _left_padded(AutoProcessor.from_pretrained(proc_dir))  # placed by device_map
    else:
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has neither config.json nor adapter_config.json")
        model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
        proc_dir = path
    return model.to(device).eval(), _left_padded(AutoProcessor.from_pretrained(proc_dir))


def mean_rgb(processor) -> tuple[int, int, int]:
    """The processor's normalisation mean as 8-bit RGB (grey 128 when it has none)."""
    mean = getattr(processor.image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
    return tuple(round(255 * m) for m in mean)


def blank_image(processor) -> Image.Image:
    """A uniform image in the processor's mean colour: zero after normalisation, so no visual signal (the blind
    control's image)."""
    return Image.new("RGB", (224, 224), mean_rgb(processor))


def _left_padded(processor):
    processor.tokenizer.padding_side = "left"
    return processor


def prompt_text(processor, messages: list[dict]) -> str:
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompts(processor, images, prompts: list[str], **kwargs):
    """Processor inputs for rendered chat prompts, tokenized as training tokenized them.

    The rendered template already holds every special token, bos included, so the tokenizer adds
    none: Llama-3 and Mistral tokenizers would otherwise put a second bos in front.
    """
    return processor(images=images, text=prompts, add_special_tokens=False, **kwargs)


@torch.inference_mode()
def answer_batch(model, processor, images: list[Image.Image], questions: list[str],
                 max_new_tokens: int = 48) -> list[str]:
    """Greedy answers, one per (image, question), generated together with left padding and a KV cache."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    prompts = [prompt_text(processor, [user_turn(q)]) for q in questions]
    batch = encode_prompts(processor, [im.convert("RGB") for im in images], prompts,
                           return_tensors="pt", padding=True).to(model.device)
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    out = model.generate(**batch, generation_config=model_greedy_config(model, processor.tokenizer, max_new_tokens))
    new = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
