"""QA record -> chat messages -> token ids with labels only on assistant turns (masked on ids, per turn)."""
from __future__ import annotations

IGNORE_INDEX = -100


class TooLong(ValueError):
    """A conversation that does not fit max_length whole (image tokens and every answer included)."""


def user_turn(question: str, with_image: bool = True) -> dict:
    """The user's message: the image (as a placeholder part the template renders) and the question."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return {"role": "user", "content": content}


def record_messages(record: dict, with_image: bool = True) -> list[dict]:
    """One QA record as a chat: the user shows the image and asks, the assistant answers; a multi-turn
    record's `follow_ups` ([{question, answer}], absent in older parquet) continue it without the image."""
    messages = [user_turn(record["question"], with_image), {"role": "assistant", "content": record["answer"]}]
    for turn in record.get("follow_ups") or []:
        messages += [user_turn(turn["question"], False), {"role": "assistant", "content": turn["answer"]}]
    return messages


def tokenize_chat(messages: list[dict], tokenizer, chat_template: str, image_token: str,
                  image_seq_length: int, max_length: int,
                  add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Token ids and labels for a whole conversation.

    The template is rendered up to each assistant turn (with the generation prompt: the exact text
    inference feeds the model) and through it; each new piece of text is tokenized on its own and
    only the assistant pieces are labelled. Some templates close a finished conversation with
    special tokens a continuing one lacks (Phi-3 appends eos when no generation prompt is asked
    for): the last answer keeps them as its end, earlier answers stop where the next turn begins.
    Each `<image>` expands to `image_seq_length` image tokens. A conversation longer than
    `max_length` raises `TooLong`: it is never cut, neither through the image nor through an answer.
    With `add_generation_prompt`, a conversation that ends with a user turn ends with the assistant
    header: the ids a chat feeds the model, every earlier turn in exactly the ids training used.
    """
    def render(msgs, gen_prompt):
        return tokenizer.apply_chat_template(msgs, chat_template=chat_template, tokenize=False,
                                             add_generation_prompt=gen_prompt)

    answers = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    # the text before each answer (assistant header included), then the whole conversation
    ends_open = add_generation_prompt and messages[-1]["role"] != "assistant"
    heads = [render(messages[:k], True) for k in answers] + [render(messages, ends_open)]
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, k in enumerate(answers):
        _extend(ids, labels, done, heads[i], tokenizer, image_token, image_seq_length, False)
        if k == len(messages) - 1:  # the last turn: the whole conversation, rendered above
            full = heads[-1]
        else:  # more turns follow this answer
            full = _continued(render(messages[:k + 1], False), heads[i + 1], tokenizer)
        _extend(ids, labels, heads[i], full, tokenizer, image_token, image_seq_length, True)
        done = full
    if not answers or answers[-1] != len(messages) - 1:  # trailing turns without an answer
        _extend(ids, labels, done, heads[-1], tokenizer, image_token, image_seq_length, False)
    if len(ids) > max_length:
        first_label = next((i for i, lab in enumerate(labels) if lab != IGNORE_INDEX), len(ids))
        if first_label >= max_length:
            raise TooLong(f"prompt is {first_label} tokens (image tokens included) but max_length is "
                          f"{max_length}: raise max_length or shorten the question")
        raise TooLong(f"prompt and answer are {len(ids)} tokens but max_length is {max_length}: the answer would "
                      f"be cut (and lose its end-of-turn token); raise max_length or shorten the answer")
    return ids, labels


def _continued(full: str, following: str, tokenizer) -> str:
    """`full` without the closing special tokens a template adds only when the conversation ends there."""
    specials = sorted(tokenizer.all_special_tokens, key=len, reverse=True)
    cut = full
    while not following.startswith(cut):
        closing = next((t for t in specials if cut.endswith(t)), None)
        if closing is None:
            return full  # not a closing marker: _extend reports the template as unusable
        cut = cut[:-len(closing)]
    return cut


def _extend(ids, labels, done, text, tokenizer, image_token, n_image, train):
    if not text.startswith(done):
        raise ValueError("chat template does not render conversation prefixes as prefixes (the text up to "
                         "one turn is not the start of the text up to the next); per-turn label masking needs "
                         f"that property. Expected a continuation of ...{done[-60:]!r}, got ...{text[-80:]!r}")
    piece = text[len(done):].replace(image_token, image_token * n_image)
    new = tokenizer(piece, add_special_tokens=False)["input_ids"]
    ids.extend(new)
    labels.extend(new if train else [IGNORE_INDEX] * len(new))
