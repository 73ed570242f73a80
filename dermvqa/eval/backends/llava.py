"""`llava:DIR`: a LLaVA folder dermvqa built (exported, or base + LoRA adapter), answered by dermvqa.infer.

The same calls `dermvqa chat` and earlier `dermvqa eval` runs made (greedy `answer_batch`, option likelihood
through `scored_replies` + `option_probs`), so its numbers are those of the direct path.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

import dermvqa
from dermvqa.eval.backends.base import ModelAdapter
from dermvqa.model.folder import files_sha256



def weight_hashes(folder: Path) -> dict[str, str]:
    """{file name: sha256} of every *.safetensors file in the folder, by name."""
    return {p.name: files_sha256([p]) for p in sorted(Path(folder).glob("*.safetensors"))}


class LlavaAdapter(ModelAdapter):
    kind = "llava"
    supports_likelihood = True

    def __init__(self, path: str | Path, device: str | None = None, batch_size: int = 16):
        """`batch_size`: (question, option) pairs per forward pass in likelihood mode."""
        from dermvqa.infer.generate import load_model

        self.path = Path(path)
        self.spec = f"llava:{path}"
        self.batch_size = batch_size
        self.model, self.processor = load_model(self.path, device=device)
        self.device, self.dtype = str(self.model.device), str(self.model.dtype).replace("torch.", "")

    def generate(self, images: list[Image.Image], questions: list[str], max_new_tokens: int) -> list[dict]:
        from dermvqa.infer.generate import answer_batch

        replies = answer_batch(self.model, self.processor, images, questions, max_new_tokens=max_new_tokens)
        return [{"reply": r} for r in replies]

    def option_probs(self, images: list[Image.Image], questions: list[str], options: list[list[str]],
                     families: list[str], max_new_tokens: int, reduce: str) -> list[dict]:
        from dermvqa.infer.likelihood import option_probs, scored_replies

        replies = scored_replies(self.model, self.processor, images, questions, options, families, max_new_tokens)
        probs = option_probs(self.model, self.processor, images, questions, replies, batch_size=self.batch_size,
                             reduce=reduce)
        rows = []
        for opts, p, r in zip(options, probs, replies):
            k = max(range(len(p)), key=p.__getitem__)
            rows.append({"reply": opts[k], "scored_reply": r[k], "probs": p})
        return rows

    def blank_image(self) -> Image.Image:
        from dermvqa.infer.generate import blank_image

        return blank_image(self.processor)

    def manifest(self) -> dict:
        """Model path and weight hashes (the base's too for an adapter folder), the chat template's sha256."""
        from dermvqa.model.adapter import adapter_base

        template = self.processor.chat_template or ""
        out = {"kind": self.kind, "spec": self.spec, "path": str(self.path), "weights_sha256": weight_hashes(self.path),
               "prompt_template": {"source": "the folder's chat template",
                                   "sha256": hashlib.sha256(template.encode("utf-8")).hexdigest()},
               "decoding": "greedy (dermvqa.model.generation.model_greedy_config)",
               "dermvqa_version": dermvqa.__version__}
        if (self.path / "adapter_config.json").exists():
            base = adapter_base(self.path)
            out["base"] = {"path": base, "weights_sha256": weight_hashes(Path(base))}
        return out
