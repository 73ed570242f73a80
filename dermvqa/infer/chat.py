"""Multi-turn chat about one lesion photo: conversation state, prompt-length fitting, batched and streamed replies.

The image rides on the first user turn that is still in the prompt; when the conversation outgrows the
model's context, the oldest turns are dropped. Decoding is greedy, as in `generate.answer_batch`.
Prompts are tokenized turn by turn exactly as training tokenizes a conversation (`tokenize_chat`): the
whole history tokenized at once merges differently at turn boundaries with some tokenizers (Mistral,
Phi-3: an answer starting `▁pl` in training would come back as `pl`).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import TextIteratorStreamer

from dermvqa.data.conversation import tokenize_chat, user_turn
from dermvqa.model.generation import model_greedy_config
from dermvqa.model.processor import tokens_per_image


class PromptTooLong(ValueError):
    pass


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn reached) or "length" (max_new_tokens reached)


def conversation(turns: list[tuple[str, str]], question: str) -> list[dict]:
    """Chat messages for past (question, answer) turns plus a new question; the image is on the first user turn."""
    messages = []
    for i, (q, a) in enumerate(turns):
        messages += [user_turn(q, with_image=i == 0), {"role": "assistant", "content": a}]
    return messages + [user_turn(question, with_image=not turns)]


def context_length(model) -> int:
    return model.config.text_config.max_position_embeddings


def prompt_ids(processor, messages: list[dict]) -> list[int]:
    """Token ids of a conversation that ends with a user turn, through the generation prompt, image tokens
    expanded; earlier turns are exactly the ids training made of them."""
    ids, _ = tokenize_chat(messages, processor.tokenizer, processor.chat_template, processor.image_token,
                           tokens_per_image(processor), max_length=sys.maxsize, add_generation_prompt=True)
    return ids


def count_prompt_tokens(processor, messages: list[dict]) -> int:
    """Prompt length in tokens with image placeholders expanded."""
    return len(prompt_ids(processor, messages))


def _image_count(messages: list[dict]) -> int:
    return sum(part["type"] == "image" for m in messages if isinstance(m["content"], list) for part in m["content"])


def check_fits(model, prompt_tokens: int, max_new_tokens: int) -> None:
    limit = context_length(model)
    if prompt_tokens + max_new_tokens > limit:
        raise PromptTooLong(f"prompt is {prompt_tokens} tokens and {max_new_tokens} new tokens were asked for; "
                            f"this model's context holds {limit} tokens in all")


def _eos_ids(model, processor) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    return {i for i in eos + [processor.tokenizer.eos_token_id] if i is not None}


@torch.inference_mode()
def generate_replies(model, processor, images: list[Image.Image], conversations: list[list[dict]],
                     max_new_tokens: int | list[int] = 256, streamer=None) -> list[Reply]:
    """Greedy replies to several conversations at once (left padding); each has exactly one image."""
    if len(images) != len(conversations):
        raise ValueError(f"{len(images)} images but {len(conversations)} conversations")
    limits = [max_new_tokens] * len(images) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    for i, messages in enumerate(conversations):
        if _image_count(messages) != 1:
            raise ValueError(f"conversation {i} holds {_image_count(messages)} images; exactly one is supported")
    rows = [prompt_ids(processor, m) for m in conversations]
    prompt_lens = [len(r) for r in rows]
    for n, limit in zip(prompt_lens, limits):
        check_fits(model, n, limit)
    width, pad = max(prompt_lens), processor.tokenizer.pad_token_id
    pixels = processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    batch = {"input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows]),  # left padding
             "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]),
             "pixel_values": pixels.to(model.dtype)}
    batch = {k: v.to(model.device) for k, v in batch.items()}
    out = model.generate(**batch, generation_config=model_greedy_config(model, processor.tokenizer, max(limits)),
                         streamer=streamer)
    eos = _eos_ids(model, processor)
    replies = []
    for row, n, limit in zip(out[:, batch["input_ids"].shape[1]:].tolist(), prompt_lens, limits):
        row = row[:limit]
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        tokens = row if stop is None else row[:stop]
        text = processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        replies.append(Reply(text, n, len(tokens), "length" if stop is None else "stop"))
    return replies


class ReplyStream:
    """One reply generated token by token. Iterate for text chunks; `reply` holds the whole Reply afterwards.

    Check the prompt length first (count_prompt_tokens + check_fits) to refuse a long prompt before any text.
    `run()` generates in the calling thread (a serving worker); `start()` generates in a new thread.
    """

    def __init__(self, model, processor, image: Image.Image, messages: list[dict], max_new_tokens: int = 256,
                 on_done=None):
        self._args = (model, processor, [image], [messages], max_new_tokens)
        self._streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_done = on_done
        self._error: BaseException | None = None
        self._finished = threading.Event()
        self.reply: Reply | None = None

    def run(self) -> None:
        try:
            self.reply = generate_replies(*self._args, streamer=self._streamer)[0]
            if self._on_done:
                self._on_done(self.reply)
        except BaseException as e:  # handed to the reader, which re-raises it
            self._error = e
            self._streamer.end()
        finally:
            self._finished.set()

    def start(self) -> "ReplyStream":
        threading.Thread(target=self.run, daemon=True).start()
        return self

    def __iter__(self):
        """Text chunks whose concatenation equals `reply.text` (outer whitespace held back)."""
        held, started = "", False
        for chunk in self._streamer:
            text = held + chunk
            if not started:
                text = text.lstrip()
            body = text.rstrip()
            held = text[len(body):]
            if body:
                started = True
                yield body
        self._finished.wait()
        if self._error is not None:
            raise self._error


class ChatSession:
    """A conversation about one image: ask() streams a reply and records the turn once it is complete."""

    def __init__(self, model, processor, image: Image.Image | None = None, max_new_tokens: int = 256):
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.image = image
        self.turns: list[tuple[str, str]] = []
        self.dropped_turns = 0  # how many old turns the last question had to leave out of the prompt

    def load_image(self, image: Image.Image) -> None:
        """A new photo starts a new conversation."""
        self.image, self.turns = image, []

    def reset(self) -> None:
        self.turns = []

    def ask(self, question: str) -> ReplyStream:
        if self.image is None:
            raise ValueError("no image loaded: give a lesion photo first")
        if not question.strip():
            raise ValueError("the question is empty")
        turns = list(self.turns)
        while True:  # drop the oldest turns until the prompt fits
            messages = conversation(turns, question)
            n = count_prompt_tokens(self.processor, messages)
            if not turns or n + self.max_new_tokens <= context_length(self.model):
                break
            turns = turns[1:]
        check_fits(self.model, n, self.max_new_tokens)
        self.dropped_turns = len(self.turns) - len(turns)

        def record(reply: Reply):
            self.turns = turns + [(question, reply.text)]

        return ReplyStream(self.model, self.processor, self.image, messages, self.max_new_tokens, record).start()
