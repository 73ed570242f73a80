"""The one interface every model backend of `dermvqa eval` implements (llava:, hf:, openai:).

The runner, the blind control, the strata and the reports see only this: a batch of images and questions
in, one answer row per question out, and (where the backend exposes logits) option probabilities.
An answer row is {"reply": text} (endpoints add "finish_reason", and "thinking" for reasoning cut from the
answer) or, when the backend could not produce an answer, {"reply": "",
"failure": reason} with reason one of FAILURES (and, where the backend knows them, "error": what went wrong,
"hint": what to change); the runner logs it, the report counts it by reason, it scores as wrong, and a rerun
into the same folder asks it again. It is never dropped, never retried into a guess.
"""
from __future__ import annotations

from PIL import Image

FAILURES = ("empty", "refused", "reasoning_only", "error_http", "error_timeout", "error_malformed", "error_other")


class ModelAdapter:
    """Base class: subclasses set `spec` and `kind`, and implement generate() and manifest()."""

    spec: str = ""                 # as the user gave it, e.g. "llava:runs/x/model", "hf:Qwen/Qwen2.5-VL-3B-Instruct"
    kind: str = ""                 # llava | hf | openai
    supports_likelihood: bool = False

    def generate(self, images: list[Image.Image], questions: list[str], max_new_tokens: int) -> list[dict]:
        """Greedy answers, one row per (image, question), in order."""
        raise NotImplementedError

    def option_probs(self, images: list[Image.Image], questions: list[str], options: list[list[str]],
                     families: list[str], max_new_tokens: int, reduce: str) -> list[dict]:
        """Per question {"reply": chosen option, "scored_reply": the text scored, "probs": [...]}, for
        backends with supports_likelihood."""
        raise NotImplementedError(f"{self.kind}: no option likelihood for this backend")

    def blank_image(self) -> Image.Image:
        """The blind control's image: uniform, in the model's normalisation mean where it has one."""
        return Image.new("RGB", (224, 224), (128, 128, 128))

    def manifest(self) -> dict:
        """What identifies the model for `compare`: kind, spec, path + weight-file sha256 or hub id + revision
        or endpoint + served model name, the prompt template, the decoding settings."""
        raise NotImplementedError

    def run_options(self) -> dict:
        """How this run reaches the model where that changes no answer (timeouts, retries, concurrency): kept in
        run_info.json, not in the manifest, so a rerun may change them."""
        return {}

    def close(self) -> None:
        """Release what the backend holds (HTTP sessions, caches)."""
