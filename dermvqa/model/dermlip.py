"""Convert an open_clip DermLIP checkpoint into a transformers CLIP vision tower + image processor.

Source: a hub id (`hf-hub:redlessone/DermLIP_ViT-B-16`) or a local folder holding
`open_clip_config.json` and the weights. Only the image tower is kept. Activation, image size,
width, depth and normalisation come from the config, never from assumptions. The result is a
`CLIPVisionModelWithProjection` folder (the projection keeps DermLIP's 512-d embedding space);
`CLIPVisionModel.from_pretrained` / `AutoModel` load it as the plain tower LLaVA uses.
Weights in the DermLIP-PanDerm layout (`visual.blocks.*`, a CAE ViT) go to dermvqa.model.panderm (a BEiT tower).
Conversion needs only torch + safetensors: open_clip itself is used in the tests, not here.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from dermvqa.model.folder import save_model_folder
from dermvqa.model.processor import CLIP_MEAN, CLIP_STD

HUB_PREFIX = "hf-hub:"
SAFE_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors")
PICKLE_WEIGHTS = ("open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "pytorch_model.bin", "model.pth")
# vision_cfg keys whose default value is all the HF CLIP vision tower can represent
_MUST_BE_DEFAULT = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
    "pos_embed_type": "learnable", "final_ln_after_pool": False, "pool_type": "tok", "act_kwargs": None,
    "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "timm_model_name": None,
}
_HARMLESS = {"patch_dropout", "layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "output_tokens",
             "norm_kwargs", "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias",
             "timm_drop", "timm_drop_path", "attn_pooler_queries", "attn_pooler_heads"}
PANDERM_HINT = ("vision_cfg names the PanDerm (CAE ViT) variant of DermLIP, which only the Derm1M repository's fork "
                "of open_clip builds, but the weights are not in its layout (no visual.blocks.*, visual.patch_embed.*)")


class DermLIPError(ValueError):
    """A DermLIP source that cannot be converted; the message names the file and the reason."""


def resolve_source(src: str) -> Path:
    """Return a local folder for `src` (downloading config + safetensors weights for a hub id)."""
    if src.startswith(HUB_PREFIX):
        from huggingface_hub import hf_hub_download, list_repo_files

        repo = src[len(HUB_PREFIX):]
        files = set(list_repo_files(repo))
        wanted = ["open_clip_config.json"] + [f for f in SAFE_WEIGHTS + PICKLE_WEIGHTS if f in files][:1]
        for name in wanted:
            path = Path(hf_hub_download(repo, name))
        return path.parent
    folder = Path(src)
    if not folder.is_dir():
        raise DermLIPError(f"{src}: not a folder and not an 'hf-hub:org/name' id")
    return folder


def read_config(folder: Path) -> tuple[dict, dict, str]:
    """Return (model_cfg, preprocess_cfg, source name) from `open_clip_config.json`."""
    path = folder / "open_clip_config.json"
    if not path.is_file():
        raise DermLIPError(f"{folder}: no open_clip_config.json (expected an open_clip checkpoint folder)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DermLIPError(f"{path}: not valid JSON ({e})") from e
    model_cfg = raw.get("model_cfg", raw)  # hub files nest it; a bare architecture config does not
    if "vision_cfg" not in model_cfg:
        raise DermLIPError(f"{path}: no 'vision_cfg' in the model config")
    return model_cfg, raw.get("preprocess_cfg", {}), str(path)


def check_supported(model_cfg: dict, where: str) -> None:
    """Raise if the vision config describes something a transformers CLIP vision tower cannot hold."""
    vcfg = model_cfg["vision_cfg"]
    if "pretrain_path" in vcfg or "panderm" in json.dumps(vcfg).lower():
        raise DermLIPError(f"{where}: {PANDERM_HINT}")
    for key, default in _MUST_BE_DEFAULT.items():
        if (vcfg.get(key, default) or None) != (default or None):
            raise DermLIPError(f"{where}: vision_cfg.{key}={vcfg[key]!r} is not supported by the CLIP vision "
                               f"tower (only {default!r})")
    unknown = set(vcfg) - set(_MUST_BE_DEFAULT) - _HARMLESS
    if unknown:
        raise DermLIPError(f"{where}: unknown vision_cfg keys {sorted(unknown)}; this is not a stock open_clip "
                           f"ViT (a fork's model?) and cannot be converted safely")
    if isinstance(vcfg.get("layers", 12), (list, tuple)):
        raise DermLIPError(f"{where}: vision_cfg.layers is a list (a ResNet tower); only ViT towers convert")
    if (vcfg.get("norm_kwargs") or {}).keys() - {"eps"}:
        raise DermLIPError(f"{where}: vision_cfg.norm_kwargs={vcfg['norm_kwargs']} is not supported")


def load_weights(folder: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Load the checkpoint (safetensors preferred). Pickle files only with `allow_pickle`."""
    for name in SAFE_WEIGHTS:
        if (folder / name).is_file():
            return load_file(folder / name)
    for name in PICKLE_WEIGHTS:
        path = folder / name
        if path.is_file():
            if not allow_pickle:
                raise DermLIPError(f"{path}: pickle weights can run code when loaded; convert them to safetensors "
                                   f"or pass --allow-pickle if you trust the file")
            obj = torch.load(path, map_location="cpu", weights_only=True)
            obj = obj.get("state_dict", obj)
            return {k.removeprefix("module."): v for k, v in obj.items()}
    raise DermLIPError(f"{folder}: no weights file (looked for {', '.join(SAFE_WEIGHTS + PICKLE_WEIGHTS)})")


def vision_config(model_cfg: dict):
    """Build the transformers CLIPVisionConfig equivalent of an open_clip vision_cfg."""
    from transformers import CLIPVisionConfig

    vcfg = model_cfg["vision_cfg"]
    width = vcfg.get("width", 768)
    size = vcfg.get("image_size", 224)
    patch = vcfg.get("patch_size", 16)
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise DermLIPError(f"non-square image_size {size} is not supported")
        size = size[0]
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(width * vcfg.get("mlp_ratio", 4.0)),
        num_hidden_layers=vcfg.get("layers", 12),
        num_attention_heads=width // vcfg.get("head_width", 64),
        image_size=size,
        patch_size=patch,
        projection_dim=model_cfg.get("embed_dim", 512),
        hidden_act="quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu",
        layer_norm_eps=(vcfg.get("norm_kwargs") or {}).get("eps", 1e-5),
    )


def convert_state_dict(sd: dict[str, torch.Tensor], num_layers: int, where: str = "checkpoint") -> dict:
    """Map open_clip `visual.*` keys to CLIPVisionModelWithProjection keys (see DESIGN.md §4)."""
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    if not visual:
        raise DermLIPError(f"{where}: no 'visual.*' weights found")
    out, used = {}, set()

    def take(src: str, dst: str, fn=lambda t: t):
        if src not in visual:
            raise DermLIPError(f"{where}: missing weight visual.{src}")
        out[f"vision_model.{dst}"] = fn(visual[src])
        used.add(src)

    take("conv1.weight", "embeddings.patch_embedding.weight")
    take("class_embedding", "embeddings.class_embedding")
    take("positional_embedding", "embeddings.position_embedding.weight")
    for ln_src, ln_dst in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        take(f"{ln_src}.weight", f"{ln_dst}.weight")
        take(f"{ln_src}.bias", f"{ln_dst}.bias")
    for i in range(num_layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for part in ("weight", "bias"):
            for j, qkv in enumerate(("q", "k", "v")):
                take(f"{src}attn.in_proj_{part}", f"{dst}self_attn.{qkv}_proj.{part}",
                     lambda t, j=j: t.chunk(3, dim=0)[j].clone())
            take(f"{src}attn.out_proj.{part}", f"{dst}self_attn.out_proj.{part}")
            take(f"{src}ln_1.{part}", f"{dst}layer_norm1.{part}")
            take(f"{src}ln_2.{part}", f"{dst}layer_norm2.{part}")
            take(f"{src}mlp.c_fc.{part}", f"{dst}mlp.fc1.{part}")
            take(f"{src}mlp.c_proj.{part}", f"{dst}mlp.fc2.{part}")
    if "proj" in visual:
        out["visual_projection.weight"] = visual["proj"].t().contiguous()
        used.add("proj")
    leftover = sorted(set(visual) - used)
    if leftover:
        raise DermLIPError(f"{where}: weights the CLIP vision tower has no place for: {leftover[:5]} "
                           f"({len(leftover)} in all); refusing a lossy conversion")
    return out


def image_processor(preprocess_cfg: dict, image_size: int):
    """A CLIPImageProcessor that reproduces open_clip's eval transform for this config."""
    from transformers import CLIPImageProcessor

    mode = preprocess_cfg.get("resize_mode", "shortest")
    if preprocess_cfg.get("interpolation", "bicubic") != "bicubic":
        raise DermLIPError(f"preprocess interpolation {preprocess_cfg['interpolation']!r} is not supported")
    common = dict(image_mean=list(preprocess_cfg.get("mean", CLIP_MEAN)),
                  image_std=list(preprocess_cfg.get("std", CLIP_STD)), resample=3, do_convert_rgb=True)
    if mode == "shortest":
        return CLIPImageProcessor(size={"shortest_edge": image_size}, do_center_crop=True,
                                  crop_size={"height": image_size, "width": image_size}, **common)
    if mode == "squash":
        return CLIPImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False,
                                  crop_size={"height": image_size, "width": image_size}, **common)
    raise DermLIPError(f"preprocess resize_mode {mode!r} has no CLIPImageProcessor equivalent")


def check_layout(state: dict, where: str) -> None:
    """Raise unless the image-tower weights are an open_clip ViT's or DermLIP-PanDerm's."""
    if not any(k.startswith(("visual.conv1.", "visual.transformer.resblocks.")) for k in state):
        found = sorted({".".join(k.split(".")[:2]) for k in state if k.startswith("visual.")})[:5]
        raise DermLIPError(f"{where}: the weights are neither an open_clip ViT (visual.conv1, visual.transformer."
                           f"resblocks.*) nor DermLIP-PanDerm (visual.patch_embed, visual.blocks.*); found "
                           f"{found or 'no visual.* keys'}")


def panderm_tower(weights: dict, model_cfg: dict, preprocess_cfg: dict, folder: Path):
    """(PanDermTower, CLIPImageProcessor) for weights in the DermLIP-PanDerm layout (dermvqa.model.panderm)."""
    from dermvqa.model.panderm import PanDermError, convert_panderm

    try:
        tower = convert_panderm(weights, model_cfg, str(folder))
    except PanDermError as e:
        raise DermLIPError(str(e)) from None
    side = tower.config.image_size
    if preprocess_cfg.get("size", side) not in (side, [side, side]):
        raise DermLIPError(f"{folder}: preprocess_cfg.size {preprocess_cfg['size']} but the tower's position table "
                           f"is for {side}px")
    return tower, image_processor(preprocess_cfg, side)


def convert_dermlip(src: str, allow_pickle: bool = False):
    """Return (CLIPVisionModelWithProjection in fp32, CLIPImageProcessor) for an open_clip DermLIP source, or
    (PanDermTower, CLIPImageProcessor) for DermLIP-PanDerm; `.vision_model` of either is the tower LLaVA takes."""
    from transformers import CLIPVisionModelWithProjection

    from dermvqa.model.panderm import is_panderm

    folder = resolve_source(src)
    model_cfg, preprocess_cfg, where = read_config(folder)
    weights = load_weights(folder, allow_pickle)
    if is_panderm(weights):
        return panderm_tower(weights, model_cfg, preprocess_cfg, folder)
    check_layout(weights, str(folder))
    check_supported(model_cfg, where)
    config = vision_config(model_cfg)
    state = convert_state_dict(weights, config.num_hidden_layers, str(folder))
    model = CLIPVisionModelWithProjection(config).eval()
    if "visual_projection.weight" not in state:
        state["visual_projection.weight"] = torch.zeros_like(model.visual_projection.weight)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, tensor in state.items():
        if expected.get(key) != tuple(tensor.shape):
            raise DermLIPError(f"{folder}: {key} has shape {tuple(tensor.shape)}, the config implies "
                               f"{expected.get(key)} (config and weights disagree)")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model, image_processor(preprocess_cfg, config.image_size)


def save_converted(model, processor, out_dir: str | Path, source: str) -> Path:
    """Write the converted tower + processor into `out_dir` atomically (temp folder + rename)."""
    return save_model_folder(model, processor, out_dir, "CONVERTED_FROM.json",
                             {"source": source, "converter": "dermvqa.model.dermlip"})


def convert_dermlip_cli(src: str, out: str, allow_pickle: bool = False) -> None:
    """Body of `dermvqa convert-dermlip`."""
    model, processor = convert_dermlip(src, allow_pickle=allow_pickle)
    path = save_converted(model, processor, out, src)
    c = model.config
    print(f"converted {src} -> {path}: {c.model_type} ViT {c.num_hidden_layers}x{c.hidden_size}, patch "
          f"{c.patch_size}, {c.image_size}px, act {c.hidden_act}, mean {processor.image_mean}, "
          f"std {processor.image_std}")
