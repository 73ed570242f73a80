"""Where the model looked: per-patch relevance of the image tokens for one (image, question, answer).

Three methods on a plain `LlavaForConditionalGeneration` (CPU or GPU, any dtype), all explaining the
answer's log-probability (the whole assistant reply, as in dermvqa/infer/likelihood.py):
- `pixels` (the default): gradient × input on the normalised pixels, through the vision tower, the
  projector and the LLM; a patch's relevance is the summed |gradient × pixel| over its pixels.
- `gradxinput`: gradient × input on the projected image-token embeddings that enter the LLM; a patch's
  relevance is the sum over the hidden size of gradient × embedding. The tower has already mixed the
  patches by then, so this map points less well at the lesion.
- `rollout`: attention rollout through the LLM's layers (heads averaged, identity added for the
  residual, rows renormalised), read from the positions that predict the answer tokens to the image tokens.
`dermvqa.bench.trust` compares them by the pointing game on the synthetic world's lesion masks;
the default is the one that measured better there. A map is returned as a rows × cols grid aligned
with the square the image processor makes (resize the short side, centre crop), rendered as a PNG
overlay (colour map, colour bar, the answer as the title) and a JSON grid. The peak point (row, column as
fractions of the square) is what the pointing game scores: for `pixels` the hottest pixel, for the
patch-level methods the centre of the hottest patch.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dermvqa.infer.generate import encode_prompts, prompt_text, user_turn
from dermvqa.infer.likelihood import continuation_text

METHODS = ("pixels", "gradxinput", "rollout")
DEFAULT_METHOD = "pixels"
SCHEMA_ID = "dermvqa.explanation/1"


@dataclass
class Explanation:
    grid: np.ndarray          # rows x cols relevance, the raw method's units
    method: str
    question: str
    answer: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    hottest_pixel: tuple[int, int, int] | None = None  # (row, column, side) of a pixel-level map's peak

    def normalised(self) -> np.ndarray:
        """Relevance scaled to [0, 1] (the minimum maps to 0, the maximum to 1)."""
        lo, hi = float(self.grid.min()), float(self.grid.max())
        return (self.grid - lo) / (hi - lo) if hi > lo else np.zeros_like(self.grid)

    def peak(self) -> tuple[int, int]:
        r, c = np.unravel_index(int(np.argmax(self.grid)), self.grid.shape)
        return int(r), int(c)

    def peak_point(self) -> tuple[float, float]:
        """(row, column) of the hottest point as fractions 0..1 of the square the model sees."""
        if self.hottest_pixel is not None:
            r, c, side = self.hottest_pixel
            return (r + 0.5) / side, (c + 0.5) / side
        r, c = self.peak()
        return (r + 0.5) / self.grid.shape[0], (c + 0.5) / self.grid.shape[1]

    def to_json(self) -> dict:
        return {"schema": SCHEMA_ID, "method": self.method, "question": self.question, "answer": self.answer,
                "rows": int(self.grid.shape[0]), "cols": int(self.grid.shape[1]), "peak": list(self.peak()),
                "peak_point": [round(v, 4) for v in self.peak_point()],
                "grid": [[round(float(v), 4) for v in row] for row in self.normalised()],
                "raw_range": [float(self.grid.min()), float(self.grid.max())], "seconds": round(self.seconds, 4),
                "note": "grid[r][c] is patch row r, column c of the centre square the model sees, scaled to "
                        "0..1 (1: the patch that most raised the answer's log-probability); peak_point is the hottest "
                        "point as (row, column) fractions of that square"}


def _inputs(model, processor, image: Image.Image, question: str, answer: str):
    """Token ids of prompt + answer reply, the answer span, and pixel values."""
    prompt = prompt_text(processor, [user_turn(question)])
    enc = encode_prompts(processor, [image.convert("RGB")], [prompt], return_tensors="pt")
    cont = processor.tokenizer(continuation_text(processor, question, answer), add_special_tokens=False)["input_ids"]
    ids = torch.cat([enc["input_ids"][0], torch.tensor(cont, dtype=torch.long)])[None].to(model.device)
    return ids, len(cont), enc["pixel_values"].to(model.device, model.dtype)


def _grid(per_token: torch.Tensor) -> np.ndarray:
    """Image-token scores -> square patch grid (a leading CLS token, under the "full" strategy, is dropped)."""
    n = per_token.numel()
    side = math.isqrt(n)
    if side * side != n:
        side = math.isqrt(n - 1)
        if side * side != n - 1:
            raise ValueError(f"{n} image tokens do not form a square patch grid")
        per_token = per_token[1:]
    return per_token.float().reshape(side, side).cpu().numpy()


def _image_features(model, pixel_values):
    cfg = model.config
    out = model.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                   vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats.reshape(-1, feats.shape[-1])


def _answer_logprob(logits: torch.Tensor, ids: torch.Tensor, n_answer: int) -> torch.Tensor:
    logp = torch.log_softmax(logits[0, -n_answer - 1:-1].float(), dim=-1)
    return logp.gather(-1, ids[0, -n_answer:, None]).sum()


def _gradxinput(model, ids, n_answer, pixel_values):
    with torch.enable_grad():
        with torch.no_grad():
            feats = _image_features(model, pixel_values)
        feats = feats.detach().requires_grad_(True)
        embeds = model.get_input_embeddings()(ids).detach()
        is_image = (ids[0] == model.config.image_token_id)
        if int(is_image.sum()) != feats.shape[0]:
            raise ValueError(f"{int(is_image.sum())} image tokens in the prompt but {feats.shape[0]} image features")
        embeds = embeds.clone()
        embeds[0, is_image] = feats.to(embeds.dtype)
        logits = model(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), logits_to_keep=n_answer + 1).logits
        logp = _answer_logprob(logits, ids, n_answer)
        (grad,) = torch.autograd.grad(logp, feats)
    return (grad.float() * feats.detach().float()).sum(-1), float(logp.detach()), None


def _pixels(model, ids, n_answer, pixel_values):
    side = pixel_values.shape[-1] // model.config.vision_config.patch_size
    with torch.enable_grad():
        pixels = pixel_values.detach().requires_grad_(True)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                       logits_to_keep=n_answer + 1).logits
        logp = _answer_logprob(logits, ids, n_answer)
        (grad,) = torch.autograd.grad(logp, pixels)
    saliency = (grad.float() * pixels.detach().float()).abs().sum(1)[0]  # rows x cols of pixels
    patch = saliency.shape[-1] // side
    blurred = torch.nn.functional.avg_pool2d(saliency[None, None], 3, stride=1, padding=1)[0, 0]
    r, c = divmod(int(blurred.argmax()), blurred.shape[-1])
    return (saliency.reshape(side, patch, side, patch).sum((1, 3)).flatten(), float(logp.detach()),
            (r, c, blurred.shape[-1]))


@torch.inference_mode()
def _rollout(model, ids, n_answer, pixel_values):
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # only eager attention returns its weights
    try:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values,
                    output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    n = ids.shape[1]
    eye = torch.eye(n, device=ids.device, dtype=torch.float32)
    rollout = eye
    for layer in out.attentions:
        a = 0.5 * layer[0].float().mean(0) + 0.5 * eye
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    rows = rollout[n - n_answer - 1:n - 1]  # the positions that predict the answer tokens
    is_image = ids[0] == model.config.image_token_id
    return rows[:, is_image].mean(0), float(_answer_logprob(out.logits, ids, n_answer)), None


def explain(model, processor, image: Image.Image, question: str, answer: str,
            method: str = DEFAULT_METHOD) -> Explanation:
    """Relevance of each image patch for `answer` to `question` about `image`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not answer.strip():
        raise ValueError("there is no answer to explain (empty reply)")
    t0 = time.perf_counter()
    ids, n_answer, pixels = _inputs(model, processor, image, question, answer)
    per_token, logp, hottest = {"pixels": _pixels, "gradxinput": _gradxinput, "rollout": _rollout}[method](
        model, ids, n_answer, pixels)
    return Explanation(_grid(per_token), method, question, answer, time.perf_counter() - t0,
                       {"answer_logprob": round(logp, 4)}, hottest)


def processor_view(image: Image.Image, processor, side: int = 448) -> Image.Image:
    """The part of `image` the model sees (short side resized, centre square when the processor crops), at `side` px."""
    image = image.convert("RGB")
    w, h = image.size
    if getattr(processor.image_processor, "do_center_crop", False):
        s = min(w, h)
        image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return image.resize((side, side), Image.BICUBIC)


def render_overlay(image: Image.Image, expl: Explanation, processor, path: str | Path, side: int = 448) -> Path:
    """Write the photo with the relevance map over it, a colour bar and the answer as the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = np.asarray(processor_view(image, processor, side))
    heat = np.asarray(Image.fromarray((expl.normalised() * 255).astype(np.uint8)).resize((side, side),
                                                                                       Image.BILINEAR)) / 255
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=100)
    ax.imshow(view)
    shown = ax.imshow(heat, cmap="inferno", alpha=0.5, vmin=0, vmax=1)
    r, c = expl.peak()
    cell = side / expl.grid.shape[0]
    ax.add_patch(plt.Rectangle((c * cell, r * cell), cell, cell, fill=False, edgecolor="cyan", linewidth=2))
    y, x = expl.peak_point()
    ax.plot([x * side], [y * side], marker="+", markersize=14, markeredgewidth=2, color="cyan")
    ax.set_axis_off()
    title = expl.answer if len(expl.answer) <= 60 else expl.answer[:57] + "..."
    ax.set_title(f"Answer: {title}", fontsize=10, wrap=True)
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(f"relevance ({expl.method}; 1 = most); cyan: peak patch and point", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def write_explanation(image: Image.Image, expl: Explanation, processor, stem: str | Path) -> dict:
    """Write STEM.png (overlay) and STEM.json (grid); return {"png": path, "json": path, ...summary}."""
    from atomic_files import write_text_atomic

    stem = Path(stem)
    png = render_overlay(image, expl, processor, stem.with_suffix(".png"))
    js, grid = stem.with_suffix(".json"), expl.to_json()
    write_text_atomic(js, json.dumps(grid, indent=1))
    return {"png": str(png), "json": str(js), **{k: grid[k] for k in ("method", "peak", "peak_point", "seconds")}}


def explanation_payload(model, processor, image: Image.Image, question: str, answer: str) -> dict:
    """The JSON grid plus the overlay as a `data:image/png;base64,` URI, for answers sent over HTTP."""
    import base64
    import tempfile

    grounded = explain(model, processor, image, question, answer)
    with tempfile.TemporaryDirectory() as tmp:
        png = render_overlay(image, grounded, processor, Path(tmp) / "overlay.png").read_bytes()
    return {**grounded.to_json(), "overlay_png": "data:image/png;base64," + base64.b64encode(png).decode()}
