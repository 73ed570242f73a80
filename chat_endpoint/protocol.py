"""What goes into and comes out of one OpenAI-compatible chat completion, for eval's `openai:` backend, its judge
and the data teacher.

Into it: the decoding parameters (RequestOptions). The token limit goes as `max_tokens`, or as
`max_completion_tokens` for endpoints that want it (OpenAI's reasoning models); the caller's temperature (eval 0,
the teacher --temperature) unless the endpoint accepts only its default (--no-temperature); `--extra-body` keys
as given. Out of it: the reply read into an answer row, with the usage the server reported.
`content` may be a string or a list of content parts (the `text` parts are joined); `<think>…</think>` blocks
are cut from the answer and kept as `thinking`, as is a `reasoning_content` / `reasoning` field; a reply with
reasoning but no answer is the failure `reasoning_only` (with finish_reason "length": the token limit ran out
while reasoning), a reply with nothing is `empty`, a `refusal` or finish_reason "content_filter" is `refused`.
`finish_reason` is kept on every row, so answers cut at the token limit ("length") can be counted.
A 400 whose message names a parameter we sent gets a one-line hint naming the flag that changes it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import NamedTuple

TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
TEXT_PARTS = ("text", "output_text")
REASONING_FIELDS = ("reasoning_content", "reasoning")
SET_BY_US = ("model", "messages", "stream", "n", "temperature", *TOKEN_PARAMS)
THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@dataclass(frozen=True)
class RequestOptions:
    """The decoding parameters every request carries besides the model and the messages."""

    max_tokens_param: str = "max_tokens"
    temperature: float | None = 0  # None: none sent, the endpoint's default (sampled)
    extra_body: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.max_tokens_param not in TOKEN_PARAMS:
            raise ValueError(f"--max-tokens-param must be one of {', '.join(TOKEN_PARAMS)}, "
                             f"got {self.max_tokens_param!r}")
        taken = sorted(set(self.extra_body) & set(SET_BY_US))
        if taken:
            raise ValueError(f"--extra-body sets {', '.join(taken)}, which dermvqa sets itself (use "
                             "--max-tokens-param for the token limit, --no-temperature to leave temperature out)")

    def body(self, model: str, messages: list[dict], max_tokens: int) -> dict:
        body = {"model": model, "messages": messages, self.max_tokens_param: max_tokens}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body | ({"extra_body": self.extra_body} if self.extra_body else {})

    def settings(self) -> dict:
        """What shapes the answers (the manifest's settings; part of every cache key where not the default)."""
        return {"temperature": "endpoint default" if self.temperature is None else self.temperature,
                "max_tokens_param": self.max_tokens_param, "extra_body": self.extra_body}

    def key_settings(self, max_tokens: int) -> dict:
        """The cache key's settings: as before these options existed when they are at their defaults, so answers
        cached then are still found."""
        key = {"temperature": self.temperature, "max_tokens": max_tokens}
        if self.max_tokens_param != "max_tokens":
            key["max_tokens_param"] = self.max_tokens_param
        return key | ({"extra_body": self.extra_body} if self.extra_body else {})

    def decoding(self, tokens: str) -> str:
        """In words, with `tokens` naming what the token limit is (eval: the run's max_new_tokens)."""
        temperature = ("the endpoint's default temperature (sampled)" if self.temperature is None
                       else f"temperature {self.temperature:g}")
        extra = f", extra body {json.dumps(self.extra_body, sort_keys=True)}" if self.extra_body else ""
        return f"{temperature}, {self.max_tokens_param} = {tokens}{extra}"

    def hint(self, message: str) -> str | None:
        """The flag to change when a 400's message names a parameter this request sent."""
        def names(param: str) -> bool:
            return re.search(rf"\b{re.escape(param)}\b", message) is not None

        if names(self.max_tokens_param):
            other = next(p for p in TOKEN_PARAMS if p != self.max_tokens_param)
            return f"the endpoint refuses {self.max_tokens_param}: use --max-tokens-param {other}"
        if self.temperature is not None and names("temperature"):
            return (f"the endpoint refuses temperature {self.temperature:g}: use --no-temperature (its default "
                    "temperature, sampled)")
        named = [k for k in self.extra_body if names(k)]
        if named:
            return f"the endpoint refuses {named[0]}: leave it out of --extra-body"
        return None


class Reply(NamedTuple):
    content: str
    reasoning: str
    finish_reason: str | None
    refusal: str
    served_model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def read_reply(text: str) -> Reply:
    """A chat completion body -> its parts; raises ValueError when it is malformed."""
    try:
        data = json.loads(text)
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part["text"] for part in content
                              if part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str))
        elif content is not None and not isinstance(content, str):
            raise TypeError("content is neither a string nor a list of content parts")
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed chat completion ({type(e).__name__}: {e})") from e
    reasoning = next((message[f] for f in REASONING_FIELDS if isinstance(message.get(f), str) and message[f]), "")
    finish = choice.get("finish_reason")
    refusal = message.get("refusal")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Reply(content or "", reasoning, finish if isinstance(finish, str) else None,
                 refusal if isinstance(refusal, str) else "",
                 data.get("model") if isinstance(data.get("model"), str) else "",
                 *(usage.get(k) if isinstance(usage.get(k), int) else 0
                   for k in ("prompt_tokens", "completion_tokens")))


def split_thinking(text: str) -> tuple[str, str]:
    """(answer, thinking). `<think>…</think>` blocks are cut out; a `</think>` with no opening tag ends thinking
    that began with the reply (chat templates that open the block in the prompt); a `<think>` never closed
    (cut by the token limit) is thinking to the end. Text without the tags is returned as it is."""
    if "<think>" not in text and "</think>" not in text:
        return text, ""
    thoughts = []
    answer = THINK_BLOCK.sub(lambda m: thoughts.append(m.group(1).strip()) or "", text)
    if "</think>" in answer:
        head, _, answer = answer.rpartition("</think>")
        thoughts.insert(0, head.strip())
    if "<think>" in answer:
        answer, _, tail = answer.partition("<think>")
        thoughts.append(tail.strip())
    return answer.strip(), "\n\n".join(t for t in thoughts if t)


def answer_row(reply: Reply, token_flag: str = "--max-new-tokens") -> dict:
    """The answer row of a reply that came back: {"reply", "finish_reason", "thinking"} or a failure row (its hint
    names `token_flag`, the caller's token limit)."""
    answer, thought = split_thinking(reply.content)
    thinking = "\n\n".join(t for t in (reply.reasoning.strip(), thought) if t)
    extra = ({"finish_reason": reply.finish_reason} if reply.finish_reason else {}) | (
        {"thinking": thinking} if thinking else {})
    if reply.refusal or reply.finish_reason == "content_filter":
        why = f"the endpoint refused: {reply.refusal}" if reply.refusal else "finish_reason content_filter"
        return {"reply": "", "failure": "refused", "error": why, **extra}
    if answer.strip():
        return {"reply": answer, **extra}
    cut = reply.finish_reason == "length"
    if not thinking:
        return {"reply": "", "failure": "empty", "error": "the reply's content is empty"
                + (" (finish_reason length: the token limit ran out first)" if cut else ""), **extra}
    if cut:
        return {"reply": "", "failure": "reasoning_only", "error": "the token limit ran out while the model was "
                "reasoning (finish_reason length), before any answer", "hint": "reasoning counts against the "
                f"token limit: raise {token_flag}", **extra}
    return {"reply": "", "failure": "reasoning_only", "error": "the reply holds reasoning but no answer", **extra}
