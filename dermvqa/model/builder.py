"""Assemble a LLaVA model from a vision tower and any HF causal LM, as a standard transformers folder.

Vision: a converted DermLIP folder (CLIP, or BEiT for DermLIP-PanDerm), a raw open_clip DermLIP folder / `hf-hub:`
id (converted on the fly), or any HF CLIP / SigLIP vision (or full CLIP/SigLIP) model. LLM: any HF causal LM. The result
is `LlavaForConditionalGeneration` + `LlavaProcessor` whose chat template is the LLM's own, with a
prelude that turns `[{"type":"image"},{"type":"text",...}]` content into `<image>\\n` + text and pins
the date templates print (Llama-3.x: "Today Date: ..."), so training and chat render the same text on any day.
The image token reuses a reserved special token when the tokenizer has one; otherwise it is added
and the embeddings grow with rows set to the mean of the existing rows.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import (AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, BeitModel,
                          CLIPVisionModel, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                          SiglipVisionModel)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from dermvqa.model.folder import save_model_folder
from dermvqa.model.generation import greedy_config, stop_ids
from dermvqa.model.processor import CHATML_TEMPLATE, IMAGE_TOKEN, image_seq_length, image_side

PROJECTORS = {"linear": "linear", "mlp2x_gelu": "gelu"}  # name -> activation between linear_1 and linear_2
# model_type -> (tower class, has a leading CLS token); beit: DermLIP-PanDerm as dermvqa.model.panderm converts it
VISION_TYPES = {"clip_vision_model": (CLIPVisionModel, True), "siglip_vision_model": (SiglipVisionModel, False),
                "beit": (BeitModel, True)}
FULL_TYPES = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}
# Reserved / unused special tokens, in order of preference, that can stand in for <image>.
RESERVED_PATTERNS = [r"<\|image_pad\|>", r"<\|reserved_special_token_\d+\|>", r"<\|reserved_\d+\|>",
                     r"<unused\d+>", r"\[unused\d+\]", r"<\|placeholder\d+\|>"]
# The date a template prints unless the caller passes date_string (Llama-3.1's own fallback date).
TEMPLATE_DATE = "26 Jul 2024"
# Jinja prelude: pin date_string, flatten list-of-parts content into a string before the LLM's own template runs.
TEMPLATE_PRELUDE = (
    "{%- if date_string is not defined -%}{%- set date_string = TEMPLATE_DATE -%}{%- endif -%}"
    "{%- set _flat = namespace(messages=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if m['content'] is string or m['content'] is none -%}{%- set _flat.messages = _flat.messages + [m] -%}"
    "{%- else -%}{%- set _text = namespace(s='') -%}"
    "{%- for part in m['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set _text.s = _text.s + IMAGE_PLACEHOLDER + '\\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set _text.s = _text.s + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set _flat.messages = _flat.messages + [{'role': m['role'], 'content': _text.s}] -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set messages = _flat.messages -%}"
)


class BuildError(ValueError):
    """Vision tower and LLM that cannot be joined; the message says which input and why."""


def wrap_chat_template(template: str, image_token: str) -> str:
    """The LLM's template behind a prelude that pins the date and renders image parts as `image_token` + newline."""
    prelude = TEMPLATE_PRELUDE.replace("IMAGE_PLACEHOLDER", json.dumps(image_token))
    return prelude.replace("TEMPLATE_DATE", json.dumps(TEMPLATE_DATE)) + template


def load_vision(source: str, dtype=torch.float32, allow_pickle: bool = False):
    """Return (vision model, image processor, has_cls) for any supported source."""
    folder = Path(source)
    if source.startswith("hf-hub:") or (folder / "open_clip_config.json").is_file():
        from dermvqa.model.dermlip import convert_dermlip

        tower, processor = convert_dermlip(source, allow_pickle=allow_pickle)
        return tower.vision_model.to(dtype), processor, True
    config = _config(source, "vision")
    model_type = FULL_TYPES.get(config.model_type, config.model_type)
    if model_type not in VISION_TYPES:
        raise BuildError(f"vision {source}: model_type {config.model_type!r} is not a CLIP/SigLIP vision model "
                         f"(is this the LLM? supported: {sorted(VISION_TYPES) + sorted(FULL_TYPES)})")
    tower_class, has_cls = VISION_TYPES[model_type]
    tower = tower_class.from_pretrained(source, dtype=dtype)
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except OSError as e:
        raise BuildError(f"vision {source}: no image processor (preprocessor_config.json) found") from e
    return tower, processor, has_cls


def _processor_size(image_processor) -> int:
    try:
        return image_side(image_processor)
    except ValueError as e:
        raise BuildError(str(e)) from None


def find_reserved_token(tokenizer, skip: set[int] = frozenset()) -> str | None:
    """A reserved/unused special token of this tokenizer that the chat template never emits."""
    template = tokenizer.chat_template or ""
    in_use = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id} | skip
    added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for pattern in RESERVED_PATTERNS:
        for name in sorted((n for n in added if re.fullmatch(pattern, n)), key=added.get):
            if added[name] not in in_use and name not in template:
                return name
    return None


def add_image_token(tokenizer, model) -> tuple[str, int, str]:
    """Give the tokenizer an image token; return (token, id, how) with how in existing/reused/added."""
    special = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    if IMAGE_TOKEN in special:
        return IMAGE_TOKEN, special[IMAGE_TOKEN], "existing"
    reserved = find_reserved_token(tokenizer)
    if reserved is not None:
        return reserved, special[reserved], "reused"
    tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    rows = model.get_input_embeddings().weight.shape[0]
    if token_id < rows:  # a spare row the tokenizer never used: no resize, just initialise it
        _mean_init_rows(model, [token_id], token_id)
    else:
        model.resize_token_embeddings(token_id + 1, mean_resizing=False)
        _mean_init_rows(model, list(range(rows, token_id + 1)), rows)
    return IMAGE_TOKEN, token_id, "added"


@torch.no_grad()
def _mean_init_rows(model, ids: list[int], old_rows: int) -> None:
    """Set embedding (and untied output) rows `ids` to the mean of the first `old_rows` (real) rows."""
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not matrices[0]:
        matrices.append(out.weight)
    for w in matrices:
        w[ids] = w[:old_rows].float().mean(0).to(w.dtype)


def ensure_pad_token(tokenizer, skip_id: int) -> str:
    """Give a tokenizer without a pad token one: a spare reserved token, else its eos token."""
    if tokenizer.pad_token is not None:
        return "own"
    reserved = find_reserved_token(tokenizer, skip={skip_id})
    tokenizer.pad_token = reserved or tokenizer.eos_token
    return "reserved" if reserved else "eos"


def _config(source: str, which: str):
    """The model config of a folder or hub id; one that has none is a BuildError naming the input."""
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as e:
        raise BuildError(f"{which} {source}: not a model folder, and no hub model of that name could be loaded "
                         f"({e})") from e


def load_llm(source: str, dtype):
    config = _config(source, "llm")
    if config.model_type in VISION_TYPES or config.model_type in FULL_TYPES:
        raise BuildError(f"llm {source}: model_type {config.model_type!r} is a vision model (swapped --vision/--llm?)")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise BuildError(f"llm {source}: model_type {config.model_type!r} is not a causal language model")
    llm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if not hasattr(llm, "model") or llm.get_output_embeddings() is None:
        raise BuildError(f"llm {source}: {type(llm).__name__} has no .model/.lm_head pair to move into LLaVA")
    return llm, AutoTokenizer.from_pretrained(source)


def build_llava(vision: str, llm: str, projector: str = "mlp2x_gelu", feature_layer: int = -2,
                dtype=torch.bfloat16, chat_template: str | None = None, allow_pickle: bool = False, seed: int = 0):
    """Return (LlavaForConditionalGeneration, LlavaProcessor, info dict) joining `vision` and `llm`.

    The fresh projector is initialised from `seed`: the same inputs and seed give the same weights."""
    if projector not in PROJECTORS:
        raise BuildError(f"projector {projector!r}: choose one of {sorted(PROJECTORS)}")
    tower, image_processor, has_cls = load_vision(vision, dtype, allow_pickle)
    vcfg = tower.config
    if not -vcfg.num_hidden_layers <= feature_layer <= vcfg.num_hidden_layers:
        raise BuildError(f"feature_layer {feature_layer} outside the tower's {vcfg.num_hidden_layers} layers")
    if _processor_size(image_processor) != vcfg.image_size:
        raise BuildError(f"vision {vision}: image processor makes {_processor_size(image_processor)}px images but "
                         f"the tower expects {vcfg.image_size}px (config and processor disagree)")
    lm, tokenizer = load_llm(llm, dtype)
    template = chat_template or tokenizer.chat_template
    if not template:
        raise BuildError(f"llm {llm}: tokenizer has no chat template; pass one (e.g. dermvqa's ChatML)")
    token, token_id, how = add_image_token(tokenizer, lm)
    pad = ensure_pad_token(tokenizer, token_id)
    strategy = "default" if has_cls else "full"
    n_image = image_seq_length(vcfg.image_size, vcfg.patch_size, strategy, has_cls)
    if n_image >= getattr(lm.config, "max_position_embeddings", 1 << 30):
        raise BuildError(f"{n_image} image tokens do not fit the LLM's {lm.config.max_position_embeddings} positions")
    config = LlavaConfig(vision_config=vcfg.to_dict(), text_config=lm.config.to_dict(), image_token_id=token_id,
                         projector_hidden_act=PROJECTORS[projector], vision_feature_layer=feature_layer,
                         vision_feature_select_strategy=strategy, image_seq_length=n_image)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    if type(model.model.language_model) is not type(lm.model):
        raise BuildError(f"llm {llm}: its body is {type(lm.model).__name__} but LLaVA would build "
                         f"{type(model.model.language_model).__name__} from its config")
    model.model.vision_tower = tower
    model.model.language_model = lm.model
    model.lm_head = lm.get_output_embeddings()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    model.generation_config = greedy_config(stop_ids(lm.generation_config, lm.config, tokenizer=tokenizer),
                                            tokenizer.pad_token_id, lm.generation_config.bos_token_id)
    wrapped = wrap_chat_template(template, token)
    tokenizer.chat_template = wrapped
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vcfg.patch_size,
                               vision_feature_select_strategy=strategy, chat_template=wrapped, image_token=token,
                               num_additional_image_tokens=1 if has_cls else 0)
    if processor.image_token_id != token_id:
        raise BuildError(f"processor picked image token {processor.image_token!r}, expected {token!r}")
    info = {"vision": vision, "llm": llm, "projector": projector, "image_token": token, "image_token_how": how,
            "pad_token": pad, "image_seq_length": n_image, "feature_layer": feature_layer, "strategy": strategy,
            "seed": seed}
    return model.eval(), processor, info


def save_build(model, processor, info: dict, out_dir: str | Path) -> Path:
    """Save model (safetensors) + processor + BUILD_INFO.json into `out_dir` atomically."""
    return save_model_folder(model, processor, out_dir, "BUILD_INFO.json", info)


def build_cli(vision: str, llm: str, out: str, projector: str = "mlp2x_gelu", feature_layer: int = -2,
              dtype: str = "bfloat16", chat_template: str = "own", allow_pickle: bool = False, seed: int = 0) -> None:
    """Body of `dermvqa build`. chat_template: own (the LLM's), chatml, or a path to a .jinja file."""
    template = {"own": None, "chatml": CHATML_TEMPLATE}.get(chat_template)
    if chat_template not in ("own", "chatml"):
        template = Path(chat_template).read_text()
    model, processor, info = build_llava(vision, llm, projector, feature_layer, getattr(torch, dtype),
                                         chat_template=template, allow_pickle=allow_pickle, seed=seed)
    path = save_build(model, processor, info, out)
    print(f"built {path}: image token {info['image_token']!r} ({info['image_token_how']}), "
          f"{info['image_seq_length']} image tokens, projector {projector}")


def validate_llava(config, processor, where: str) -> None:
    """Raise if a LLaVA config and its processor disagree (the image-token count would not match)."""
    vcfg, tcfg = config.vision_config, config.text_config
    has_cls = VISION_TYPES.get(vcfg.model_type, (None, False))[1]
    problems = []
    expected = image_seq_length(vcfg.image_size, vcfg.patch_size, config.vision_feature_select_strategy, has_cls)
    if config.image_seq_length != expected:
        problems.append(f"config image_seq_length {config.image_seq_length} but the tower gives {expected}")
    if processor.patch_size != vcfg.patch_size:
        problems.append(f"processor patch_size {processor.patch_size} vs tower patch_size {vcfg.patch_size}")
    if processor.vision_feature_select_strategy != config.vision_feature_select_strategy:
        problems.append(f"processor strategy {processor.vision_feature_select_strategy!r} vs config "
                        f"{config.vision_feature_select_strategy!r}")
    if processor.num_additional_image_tokens != int(has_cls):
        problems.append(f"processor num_additional_image_tokens {processor.num_additional_image_tokens}, "
                        f"tower {'has' if has_cls else 'has no'} CLS token")
    if _processor_size(processor.image_processor) != vcfg.image_size:
        problems.append(f"processor makes {_processor_size(processor.image_processor)}px images, tower expects "
                        f"{vcfg.image_size}px")
    if processor.image_token_id != config.image_token_id:
        problems.append(f"processor image token id {processor.image_token_id} vs config {config.image_token_id}")
    if not 0 <= config.image_token_id < tcfg.vocab_size:
        problems.append(f"image token id {config.image_token_id} outside the LLM vocabulary ({tcfg.vocab_size})")
    if len(processor.tokenizer) > tcfg.vocab_size:
        problems.append(f"tokenizer has {len(processor.tokenizer)} tokens, the LLM embeds only {tcfg.vocab_size}")
    if problems:
        raise BuildError(f"{where}: model config and processor do not match: " + "; ".join(problems))
