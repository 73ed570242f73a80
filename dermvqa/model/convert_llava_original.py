"""Convert a checkpoint in the original LLaVA code layout (LLaVA-Med v1.5, SkinVL, LLaVA-1.5) to a plain
transformers LlavaForConditionalGeneration + processor folder, which `hf:` and `llava:` both load.

The original layout keeps the LLM's keys at the top (model.layers.*, model.embed_tokens, lm_head), the
projector at model.mm_projector.{0,2} (mlp2x_gelu) and the CLIP tower at model.vision_tower.vision_tower.*
(or only its name in mm_vision_tower); features are the tower's layer mm_vision_select_layer without the CLS
token, and images are padded to a square of the mean colour ("image_aspect_ratio": "pad"). The chat template
reproduces the original's conversation format: LLaVA-Med v1.5 (llava_mistral) was trained on Mistral instruct,
"[INST] <image>\\n{q} [/INST]", LLaVA-1.5 (llava_llama) on vicuna_v1.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (AutoConfig, AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaImageProcessor, LlavaProcessor)

from dermvqa.model.folder import files_sha256, save_model_folder
from dermvqa.model.generation import greedy_config, stop_ids

IMAGE_TOKEN = "<image>"
SIDECAR = "converted_from.json"
TEXT_TYPES = {"llava_mistral": "mistral", "llava_llama": "llama", "llava": "llama"}
PROJECTOR_TYPE = "mlp2x_gelu"
IMAGE_PART = "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
TEXT_PART = ("{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
             "{% endfor %}")
CONTENT = ("{% if message['content'] is string %}{{ message['content'] }}{% else %}" + IMAGE_PART + TEXT_PART
           + "{% endif %}")
TEMPLATES = {  # the original repos' conversation formats, images first in the first user turn
    "mistral_instruct": ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
                         + CONTENT + " [/INST]{% else %} " + CONTENT + "{{ eos_token }}{% endif %}{% endfor %}"),
    "vicuna_v1": ("{{ bos_token }}A chat between a curious human and an artificial intelligence assistant. The "
                  "assistant gives helpful, detailed, and polite answers to the human's questions.{% for message in "
                  "messages %}{% if message['role'] == 'user' %} USER: " + CONTENT + "{% else %} ASSISTANT: "
                  + CONTENT + "{{ eos_token }}{% endif %}{% endfor %}"
                  "{% if add_generation_prompt %} ASSISTANT:{% endif %}"),
}
DEFAULT_CONV = {"llava_mistral": "mistral_instruct", "llava_llama": "vicuna_v1", "llava": "vicuna_v1"}


def load_original_state(src: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint: *.safetensors, or *.bin (pickle) only when allowed."""
    files = sorted(src.glob("*.safetensors"))
    if files:
        return {k: v for f in files for k, v in load_file(f).items()}
    files = sorted(src.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{src}: no *.safetensors or *.bin weight files")
    if not allow_pickle:
        raise ValueError(f"{src}: weights are pickle (.bin) files, which can run code when loaded; convert them "
                         "only if you trust their source, with --allow-pickle")
    return {k: v for f in files for k, v in torch.load(f, map_location="cpu", weights_only=True).items()}


def tower_state(state: dict, vision_tower: str | None) -> dict[str, torch.Tensor]:
    """The CLIP tower's weights: from the checkpoint when it carries them, else from the tower's own folder."""
    prefix = "model.vision_tower.vision_tower."
    inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if inside:
        return inside
    if vision_tower is None:
        raise ValueError("checkpoint has no model.vision_tower.vision_tower.* weights; pass the CLIP tower folder")
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(vision_tower).state_dict()


def mapped_state(state: dict, tower: dict) -> dict[str, torch.Tensor]:
    """Original keys renamed to LlavaForConditionalGeneration's; refuses keys it does not know."""
    out, unknown = {}, []
    for key, value in state.items():
        if key.startswith("model.vision_tower."):
            continue
        if key.startswith("model.mm_projector."):
            index = key.split(".")[2]
            layer = {"0": "linear_1", "2": "linear_2"}.get(index)
            if layer is None:
                unknown.append(key)
                continue
            out[f"model.multi_modal_projector.{layer}.{key.split('.', 3)[3]}"] = value
        elif key.startswith("model."):
            out["model.language_model." + key[len("model."):]] = value
        elif key.startswith("lm_head."):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in the original checkpoint: {', '.join(sorted(unknown)[:5])}")
    out.update({f"model.vision_tower.{k}": v for k, v in tower.items()})
    return out


def text_config(original: dict):
    """The LLM's own config: the original's fields that the LLM config class knows (mm_* dropped)."""
    model_type = original.get("model_type")
    if model_type not in TEXT_TYPES:
        raise ValueError(f"config.json: model_type {model_type!r} is not an original-LLaVA type "
                         f"({', '.join(TEXT_TYPES)})")
    known = AutoConfig.for_model(TEXT_TYPES[model_type]).to_dict()
    return AutoConfig.for_model(TEXT_TYPES[model_type],
                                **{k: v for k, v in original.items() if k in known and k != "model_type"})


def convert(src: str | Path, out: str | Path, vision_tower: str | None = None, conv: str | None = None,
            allow_pickle: bool = False) -> Path:
    """Write the converted folder to `out` (refused if not empty) and return it."""
    src = Path(src)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (expected an original-layout LLaVA folder)")
    original = json.loads((src / "config.json").read_text())
    if original.get("mm_projector_type", "linear") != PROJECTOR_TYPE:
        raise ValueError(f"{src}/config.json: mm_projector_type {original.get('mm_projector_type')!r}; only "
                         f"{PROJECTOR_TYPE} is converted")
    if original.get("mm_use_im_start_end"):
        raise ValueError(f"{src}/config.json: mm_use_im_start_end is set; that layout is not converted")
    conv = conv or DEFAULT_CONV.get(original.get("model_type"))
    if conv not in TEMPLATES:
        raise ValueError(f"conversation format {conv!r} unknown; choose one of {', '.join(TEMPLATES)}")
    tower_src = vision_tower or original.get("mm_vision_tower")
    if not tower_src:
        raise ValueError(f"{src}/config.json names no mm_vision_tower; pass the CLIP tower folder")
    vision = CLIPVisionConfig.from_pretrained(tower_src)
    clip = CLIPImageProcessor.from_pretrained(tower_src)
    pad = original.get("image_aspect_ratio") == "pad"
    image_processor = LlavaImageProcessor(
        do_pad=pad, size=clip.size, crop_size=clip.crop_size, do_center_crop=clip.do_center_crop,
        image_mean=clip.image_mean, image_std=clip.image_std, resample=clip.resample, do_convert_rgb=True)

    tokenizer = AutoTokenizer.from_pretrained(src)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:  # the original trains and pads with unk
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    text = text_config(original)
    state = load_original_state(src, allow_pickle)
    strategy = "default" if original.get("mm_vision_select_feature", "patch") == "patch" else "full"
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         projector_hidden_act="gelu", vision_feature_layer=original.get("mm_vision_select_layer", -2),
                         vision_feature_select_strategy=strategy, multimodal_projector_bias=True,
                         image_seq_length=(vision.image_size // vision.patch_size) ** 2 + (strategy == "full"))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    weights = mapped_state(state, tower_state(state, vision_tower))
    missing = sorted(set(model.state_dict()) - set(weights))
    if missing:
        raise ValueError(f"{src}: weights missing after conversion: {', '.join(missing[:5])}")
    model.load_state_dict(weights, strict=True, assign=True)
    if len(tokenizer) > model.config.text_config.vocab_size:  # <image> added: a zero row it never predicts
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            model.get_input_embeddings().weight[image_token_id:] = 0
            model.get_output_embeddings().weight[image_token_id:] = 0
    model.generation_config = greedy_config(stop_ids(text, tokenizer=tokenizer), tokenizer.pad_token_id,
                                            tokenizer.bos_token_id)
    model.generation_config.suppress_tokens = [image_token_id]
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision.patch_size,
                               vision_feature_select_strategy=strategy, chat_template=TEMPLATES[conv],
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=1)
    sidecar = {"source": str(src.resolve()), "vision_tower": str(tower_src), "conversation": conv,
               "image_aspect_ratio": original.get("image_aspect_ratio"),
               "weights": {f.name: files_sha256([f]) for f in sorted(src.iterdir())
                           if f.suffix in (".safetensors", ".bin")}}
    return save_model_folder(model, processor, out, SIDECAR, sidecar)


def convert_cli(src: str, out: str, vision_tower: str | None = None, conv: str | None = None,
                allow_pickle: bool = False) -> None:
    """Body of `dermvqa convert-llava-original`."""
    path = convert(src, out, vision_tower, conv, allow_pickle)
    sidecar = json.loads((path / SIDECAR).read_text())
    print(f"converted {src} -> {path}: conversation {sidecar['conversation']}, vision tower "
          f"{sidecar['vision_tower']}, image_aspect_ratio {sidecar['image_aspect_ratio']}; evaluate it with "
          f"--model hf:{path}")
