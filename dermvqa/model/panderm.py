"""Convert the DermLIP-PanDerm image tower (a CAE ViT in the Derm1M fork of open_clip) into transformers' BEiT.

Why BEiT (`BeitModel`): the CAE block is BEiT's, so every operation has a native place and no weight is changed
beyond the split of the fused qkv matrix. Pre-LN blocks `x + gamma_1 * attn(norm1(x))`, `x + gamma_2 *
mlp(norm2(x))` map to `lambda_1` / `lambda_2` (layer scale carried natively: folding it into the output
projections would round float32 weights and lose float64 exactness); q and v have biases and k has none, as
`k_proj(bias=False)`; there is no LayerNorm before the first block (CLIPVisionModel's `pre_layrnorm` cannot be
removed); the fixed 2-D sin-cos table with its zero CLS row is stored as `position_embeddings`, added after the
CLS token as in CAE; `use_mean_pooling=False` applies the final norm to all tokens. Exact GELU (erf), eps 1e-6.
`hidden_states` holds the embeddings, then every block's output, CLS first, so LLaVA reads a layer and drops the
CLS token ("default") as for CLIP.

Not in BEiT: PanDerm's pooled vector `norm(mean(norm(tokens)[1:]))` reuses the final norm, which BEiT's
mean-pooling pooler cannot (it would drop the norm on the tokens). So `PanDermTower` keeps the head (768 -> 512,
the CLIP embedding) in `panderm_head.safetensors` beside the BEiT folder and computes the pooled vector and the
embedding from `last_hidden_state` with the tower's own norm; BEiT's `pooler_output` (the normed CLS token) is
unused by PanDerm. vLLM's LLaVA builds CLIP, SigLIP and Pixtral towers only: serve such a LLaVA with transformers
(`dermvqa serve api`). Shapes come from the weights; heads from `vision_cfg.head_width` (default 64: the authors'
builder hard-codes 12 heads of 64 for width 768).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import BeitConfig, BeitModel

HEAD_FILE = "panderm_head.safetensors"
LAYOUT_PREFIXES = ("visual.blocks.", "visual.patch_embed.")
_BLOCK = {"norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
          "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
          "attn.q_bias": "attention.q_proj.bias", "attn.v_bias": "attention.v_proj.bias",
          "attn.proj.weight": "attention.o_proj.weight", "attn.proj.bias": "attention.o_proj.bias",
          "gamma_1": "lambda_1", "gamma_2": "lambda_2", "mlp.fc1.weight": "mlp.fc1.weight",
          "mlp.fc1.bias": "mlp.fc1.bias", "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias"}
_EMBED = {"patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
          "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
          "cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
          "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}


class PanDermError(ValueError):
    """A PanDerm checkpoint or folder that cannot be used; the message names the file and the reason."""


def is_panderm(state: dict) -> bool:
    """True for weights in the DermLIP-PanDerm layout (`visual.blocks.*`, `visual.patch_embed.*`)."""
    return any(k.startswith(LAYOUT_PREFIXES) for k in state)


@dataclass
class PanDermOutput:
    image_embeds: torch.Tensor        # head(pooled): the CLIP embedding (authors' `forward`)
    pooled: torch.Tensor              # norm(mean of the normed patch tokens) (authors' `forward_features`)
    last_hidden_state: torch.Tensor   # norm(last block output), every token
    hidden_states: tuple | None = None


class PanDermTower(torch.nn.Module):
    """The BEiT tower LLaVA takes (`vision_model`) plus PanDerm's projection head for zero-shot use."""

    def __init__(self, tower: BeitModel, head: torch.nn.Linear):
        super().__init__()
        self.tower, self.head = tower, head

    @property
    def vision_model(self) -> BeitModel:
        return self.tower

    @property
    def config(self) -> BeitConfig:
        return self.tower.config

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> PanDermOutput:
        out = self.tower(pixel_values=pixel_values, output_hidden_states=output_hidden_states)
        pooled = self.tower.layernorm(out.last_hidden_state[:, 1:].mean(1))
        return PanDermOutput(self.head(pooled), pooled, out.last_hidden_state, out.hidden_states)

    def save_pretrained(self, folder, **kwargs) -> None:
        self.tower.save_pretrained(folder, **kwargs)
        save_file({"weight": self.head.weight.detach().contiguous(), "bias": self.head.bias.detach().contiguous()},
                  Path(folder) / HEAD_FILE)

    @classmethod
    def from_pretrained(cls, folder, dtype=torch.float32) -> "PanDermTower":
        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            raise PanDermError(f"{folder}: no {HEAD_FILE} (a PanDerm folder from `dermvqa convert-dermlip` has one)")
        tower = BeitModel.from_pretrained(folder, dtype=dtype).eval()
        return cls(tower, projection_head(load_file(path), tower.config.hidden_size, str(path)).to(dtype))


def projection_head(head: dict, width: int, where: str) -> torch.nn.Linear:
    """The head Linear (width -> embedding) from its `weight` and `bias` tensors, shapes checked."""
    weight, bias = head.get("weight"), head.get("bias")
    if weight is None or bias is None or weight.ndim != 2 or weight.shape[1] != width or \
            tuple(bias.shape) != (weight.shape[0],):
        found = {k: tuple(v.shape) for k, v in head.items()}
        raise PanDermError(f"{where}: the head needs weight (E, {width}) and bias (E,), found {found}")
    linear = torch.nn.Linear(width, weight.shape[0])
    linear.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return linear.eval()


def _shape(visual: dict, key: str, where: str) -> tuple:
    if key not in visual:
        raise PanDermError(f"{where}: missing weight visual.{key} (not a complete DermLIP-PanDerm tower)")
    return tuple(visual[key].shape)


def beit_config(visual: dict, model_cfg: dict, where: str) -> BeitConfig:
    """The BeitConfig of a PanDerm tower, its sizes read from the weights."""
    width = _shape(visual, "cls_token", where)[-1]
    out_ch, in_ch, patch, patch_w = _shape(visual, "patch_embed.proj.weight", where)
    if (out_ch, in_ch, patch) != (width, 3, patch_w):
        raise PanDermError(f"{where}: visual.patch_embed.proj.weight has shape {(out_ch, in_ch, patch, patch_w)}, "
                           f"expected ({width}, 3, P, P)")
    patches = _shape(visual, "pos_embed", where)[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise PanDermError(f"{where}: visual.pos_embed has {patches} patch rows, not a square grid")
    depth = len({m.group(1) for k in visual if (m := re.match(r"blocks\.(\d+)\.", k))})
    head_width = model_cfg.get("vision_cfg", {}).get("head_width", 64)
    if width % head_width:
        raise PanDermError(f"{where}: width {width} is not a multiple of vision_cfg.head_width {head_width}")
    embed_dim = _shape(visual, "head.weight", where)[0]
    if model_cfg.get("embed_dim", embed_dim) != embed_dim:
        raise PanDermError(f"{where}: embed_dim {model_cfg['embed_dim']} in the config, but visual.head.weight "
                           f"projects to {embed_dim}")
    return BeitConfig(hidden_size=width, num_hidden_layers=depth, num_attention_heads=width // head_width,
                      intermediate_size=_shape(visual, "blocks.0.mlp.fc1.weight", where)[0], hidden_act="gelu",
                      image_size=side * patch, patch_size=patch, num_channels=3, layer_norm_eps=1e-6,
                      use_absolute_position_embeddings=True, use_relative_position_bias=False,
                      use_shared_relative_position_bias=False, use_mask_token=False, use_mean_pooling=False,
                      layer_scale_init_value=0.1, drop_path_rate=0.0, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def beit_state_dict(visual: dict, depth: int, where: str) -> tuple[dict, dict]:
    """(BeitModel state dict, head state dict) from PanDerm `visual.*` weights (prefix stripped)."""
    out, used = {}, set()

    def take(src: str) -> torch.Tensor:
        _shape(visual, src, where)
        used.add(src)
        return visual[src].float()

    for src, dst in _EMBED.items():
        out[dst] = take(src)
    for i in range(depth):
        for src, dst in _BLOCK.items():
            out[f"layers.{i}.{dst}"] = take(f"blocks.{i}.{src}")
        q, k, v = take(f"blocks.{i}.attn.qkv.weight").chunk(3, dim=0)
        out.update({f"layers.{i}.attention.{n}_proj.weight": t.clone() for n, t in zip("qkv", (q, k, v))})
    head = {"weight": take("head.weight"), "bias": take("head.bias")}
    leftover = sorted(set(visual) - used)
    if leftover:
        raise PanDermError(f"{where}: weights the BEiT tower has no place for: {['visual.' + k for k in leftover[:5]]} "
                           f"({len(leftover)} in all); refusing a lossy conversion")
    return out, head


def convert_panderm(state: dict, model_cfg: dict, where: str) -> PanDermTower:
    """The PanDermTower (fp32, eval mode) of a checkpoint in the PanDerm layout."""
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    config = beit_config(visual, model_cfg, where)
    weights, head = beit_state_dict(visual, config.num_hidden_layers, where)
    tower = BeitModel(config).eval()
    expected = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    for key, tensor in weights.items():
        if expected.get(key) != tuple(tensor.shape):
            raise PanDermError(f"{where}: {key} gets shape {tuple(tensor.shape)}, the tower's other weights imply "
                               f"{expected.get(key)}")
    tower.load_state_dict(weights, strict=True)
    return PanDermTower(tower, projection_head(head, config.hidden_size, f"{where}: visual.head"))
