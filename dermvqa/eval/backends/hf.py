"""The `hf:ID_OR_DIR` backend: any transformers AutoModelForImageTextToText + AutoProcessor, hub id or folder.

Each question is rendered through the model's own chat template (an image part, then the text), batched
with left padding and decoded greedily with the settings pinned here, so the model's own generation_config
(an instruct model's temperature, top_p, repetition penalty) never acts. Closed questions can instead be
scored by option likelihood: each option as the assistant's whole reply, as dermvqa.infer.likelihood does
for our own LLaVA folders. Families are allowed by config.model_type only where a test covers them.
Prefix-LM families (PaliGemma: bidirectional attention over image + prompt, token_type_ids 0) get the
scored reply as causal suffix (token_type_ids 1), as their own generate() marks generated tokens.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from dermvqa.eval.backends.base import ModelAdapter
from dermvqa.model.folder import files_sha256
from dermvqa.infer.generate import blank_image
from dermvqa.infer.likelihood import VERDICT, finding_of, states_finding
from dermvqa.model.generation import model_greedy_config

# config.model_type of every family tests/eval/test_adapters_hf.py builds and checks.
TESTED_MODEL_TYPES = ("gemma3", "idefics3", "llava", "llava_next", "llava_onevision", "paligemma", "qwen2_5_vl",
                      "qwen2_vl", "smolvlm")
PREFIX_LM_MODEL_TYPES = ("paligemma",)  # token_type_ids: 0 = bidirectional prefix, 1 = causal suffix
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
PINNED_FIELDS = ("do_sample", "num_beams", "temperature", "top_p", "top_k", "repetition_penalty",
                 "no_repeat_ngram_size", "length_penalty", "eos_token_id", "pad_token_id")


def user_message(question: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}


def hub_origin(folder: Path) -> dict | None:
    """Hub id and commit of a folder inside the hub cache (…/models--org--name/snapshots/<commit>)."""
    folder = folder.resolve()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return {"hub_id": folder.parent.parent.name.removeprefix("models--").replace("--", "/"),
                "revision": folder.name}
    return None


class HFAdapter(ModelAdapter):
    """A transformers image-text-to-text model behind the eval adapter interface."""

    kind = "hf"
    supports_likelihood = True

    def __init__(self, spec: str, device: str | None = None, trust_remote_code: bool = False,
                 allow_untested: bool = False):
        if not spec.startswith("hf:") or not spec[3:]:
            raise ValueError(f"--model {spec!r}: an hf model is given as hf:HUB_ID or hf:FOLDER")
        self.spec, self.source = spec, spec[3:]
        local = Path(self.source)
        if not local.is_dir() and (self.source.startswith((".", "/", "~")) or self.source.count("/") != 1):
            raise FileNotFoundError(f"--model {spec}: no such folder, and not a hub id of the form org/name")
        self.trust_remote_code, self.allow_untested = trust_remote_code, allow_untested
        config = AutoConfig.from_pretrained(self.source, trust_remote_code=trust_remote_code)
        self.model_type = config.model_type
        if (self.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
                and "AutoModelForImageTextToText" not in (getattr(config, "auto_map", None) or {})):
            raise ValueError(f"--model {spec}: not an image-text-to-text model (model_type {self.model_type!r} has "
                             "no AutoModelForImageTextToText class: a text-only LLM cannot see the image)")
        if self.model_type not in TESTED_MODEL_TYPES and not allow_untested:
            raise ValueError(f"--model {spec}: model_type {self.model_type!r} is not a tested family "
                             f"({', '.join(TESTED_MODEL_TYPES)}); pass --allow-untested-family to run it anyway "
                             "(the report says so)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.source, dtype=dtype, trust_remote_code=trust_remote_code).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(self.source, trust_remote_code=trust_remote_code)
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"--model {spec}: the processor has no chat template to prompt it with")
        self.processor.tokenizer.padding_side = "left"
        self._manifest: dict | None = None

    def greedy_config(self, max_new_tokens: int | None):
        return model_greedy_config(self.model, self.processor.tokenizer, max_new_tokens)

    def prompt(self, question: str) -> str:
        return self.processor.apply_chat_template([user_message(question)], add_generation_prompt=True,
                                                  tokenize=False)

    def encode(self, images: list[Image.Image], prompts: list[str]) -> dict:
        """Processor inputs on the model's device. As apply_chat_template(tokenize=True) does, the tokenizer adds
        its special tokens only where the rendered template does not open with bos (LLaVA-NeXT's [INST] one)."""
        bos = self.processor.tokenizer.bos_token
        batch = self.processor(images=[[im.convert("RGB")] for im in images], text=prompts, padding=True,
                               add_special_tokens=not (bos and all(p.startswith(bos) for p in prompts)),
                               return_tensors="pt")
        batch.pop("labels", None)  # PaliGemma's processor derives training labels from the prompt
        return {k: v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in batch.items()}

    @torch.inference_mode()
    def generate(self, images: list[Image.Image], questions: list[str], max_new_tokens: int) -> list[dict]:
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        batch = self.encode(images, [self.prompt(q) for q in questions])
        out = self.model.generate(**batch, generation_config=self.greedy_config(max_new_tokens))
        new = out[:, batch["input_ids"].shape[1]:]
        return [{"reply": t.strip()} for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def continuation_ids(self, question: str, reply: str) -> list[int]:
        """Token ids the model would produce after the generation prompt to reply `reply`: what the template
        appends to that prompt for the assistant turn, or, where the template renders the assistant turn's
        opening differently (LLaVA-OneVision adds a space after the role), the reply and what follows it."""
        prompt = self.prompt(question)
        full = self.processor.apply_chat_template(
            [user_message(question), {"role": "assistant", "content": [{"type": "text", "text": reply}]}],
            tokenize=False)
        if full.startswith(prompt) and len(full) > len(prompt):
            continuation = full[len(prompt):]
        elif reply and reply in full[len(prompt) // 2:]:
            continuation = reply + full.rsplit(reply, 1)[1]
        else:
            raise ValueError(f"--model {self.spec}: the chat template does not render the assistant reply "
                             f"{reply!r} after the question, so options cannot be scored")
        return self.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def option_logprobs(self, image: Image.Image, question: str, replies: list[str], reduce: str) -> list[float]:
        """Summed (or per-token mean) log-probability of each reply after image + question: one forward
        with a row per reply, the prompt repeated and each reply appended, right-padded."""
        conts = [self.continuation_ids(question, r) for r in replies]
        batch = self.encode([image] * len(replies), [self.prompt(question)] * len(replies))
        prompt_len, width = batch["input_ids"].shape[1], max(len(c) for c in conts)
        pad = self.processor.tokenizer.pad_token_id or 0
        tail = torch.full((len(conts), width), pad, dtype=torch.long)
        tail_mask = torch.zeros_like(tail)
        for r, cont in enumerate(conts):
            tail[r, :len(cont)], tail_mask[r, :len(cont)] = torch.tensor(cont), 1
        tail, tail_mask = tail.to(self.device), tail_mask.to(self.device)
        suffix = torch.ones_like(tail) if self.model_type in PREFIX_LM_MODEL_TYPES else torch.zeros_like(tail)
        for key, value in batch.items():  # every per-token tensor grows with the reply
            if value.dim() == 2 and value.shape[1] == prompt_len:
                extra = {"input_ids": tail, "attention_mask": tail_mask, "token_type_ids": suffix}.get(
                    key, torch.zeros_like(tail))
                batch[key] = torch.cat([value, extra.to(value.dtype)], dim=1)
        logits = self.model(**batch, logits_to_keep=width + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # kept position t predicts reply token t
        scores = []
        for r, cont in enumerate(conts):
            token_lp = logp[r, :len(cont)].gather(-1, tail[r, :len(cont), None]).squeeze(-1)
            scores.append(float(token_lp.sum() / (len(cont) if reduce == "mean" else 1)))
        return scores

    def option_probs(self, images, questions, options, families, max_new_tokens, reduce) -> list[dict]:
        if not len(images) == len(questions) == len(options) == len(families):
            raise ValueError(f"{len(images)} images, {len(questions)} questions, {len(options)} option lists, "
                             f"{len(families)} families")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        verdict = [i for i, (f, o) in enumerate(zip(families, options)) if states_finding(f, o)]
        found = self.generate([images[i] for i in verdict], [questions[i] for i in verdict],
                              max_new_tokens) if verdict else []
        replies = [list(o) for o in options]
        for i, row in zip(verdict, found):  # the model's own finding, then each option's verdict
            replies[i] = [f"{finding_of(row['reply'])}{VERDICT}{o}." for o in options[i]]
        rows = []
        for i, (image, question, opts) in enumerate(zip(images, questions, options)):
            if not opts:
                raise ValueError(f"question {i} has no options to score")
            probs = torch.softmax(torch.tensor(self.option_logprobs(image, question, replies[i], reduce),
                                               dtype=torch.float64), 0).tolist()
            best = max(range(len(probs)), key=probs.__getitem__)
            rows.append({"reply": opts[best], "scored_reply": replies[i][best], "probs": probs})
        return rows

    def blank_image(self) -> Image.Image:
        return blank_image(self.processor)

    def manifest(self) -> dict:
        if self._manifest is None:
            local = Path(self.source)
            if local.is_dir():
                origin = hub_origin(local) or {}
                origin["path"] = str(local.resolve())
                folder = local
            else:
                from transformers.utils import cached_file

                folder = Path(cached_file(self.source, "config.json")).parent
                origin = hub_origin(folder) or {"hub_id": self.source, "revision": None}
            config = self.greedy_config(None).to_dict()
            self._manifest = {
                "kind": self.kind, "spec": self.spec, **origin, "model_type": self.model_type,
                "weights": {f.name: files_sha256([f]) for f in sorted(folder.iterdir())
                            if f.suffix in WEIGHT_SUFFIXES},
                "chat_template_sha256": hashlib.sha256(self.processor.chat_template.encode()).hexdigest(),
                "decoding": {k: config.get(k) for k in PINNED_FIELDS},
                "trust_remote_code": self.trust_remote_code,
                "untested_family": self.model_type not in TESTED_MODEL_TYPES,
            }
        return self._manifest
