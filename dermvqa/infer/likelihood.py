"""Multiple choice by option likelihood: score each option as the assistant's whole reply, normalise over options.

The scored continuation is what the chat template puts after the generation prompt for an assistant
turn holding the reply (e.g. `psoriasis<|im_end|>\n`), so an option that is only a prefix of the
model's preferred answer is not favoured. Families trained to state a finding before the verdict
(yes/no, closed morphology, neoplasm: "The lesion looks like X, not Y. Answer: no.") are scored on that whole
reply: the model's own greedy finding, then each option's verdict (`scored_replies`). Pairs are
batched with left padding and explicit position ids, and only the last logits are kept, so memory
stays small for large vocabularies.
"""
from __future__ import annotations

import torch
from PIL import Image

from dermvqa.infer.generate import answer_batch, encode_prompts, prompt_text, user_turn

VERDICT = ". Answer: "
VERDICT_FAMILIES = {"yes_no", "neoplasm"}  # closed answers trained as "<finding>. Answer: <option>."


def states_finding(family: str, options: list[str]) -> bool:
    """Whether a trained model replies to this closed question with a finding, then the verdict."""
    return family in VERDICT_FAMILIES or sorted(o.lower() for o in options) == ["no", "yes"]


def finding_of(reply: str) -> str:
    """The finding part of a reply ("The lesion looks like X, not Y" of "... Answer: no.")."""
    head = reply.rsplit(VERDICT.strip(), 1)[0] if VERDICT.strip() in reply else reply
    return head.strip().rstrip(".").strip()


def scored_replies(model, processor, images, questions, options, families, max_new_tokens: int = 64):
    """Per question, the full reply to score for each option: the option itself, or, for families that
    state a finding first, the model's own greedy finding followed by that option's verdict."""
    verdict = [i for i, (f, o) in enumerate(zip(families, options)) if states_finding(f, o)]
    found = answer_batch(model, processor, [images[i] for i in verdict], [questions[i] for i in verdict],
                         max_new_tokens=max_new_tokens) if verdict else []
    replies = [list(o) for o in options]
    for i, reply in zip(verdict, found):
        replies[i] = [f"{finding_of(reply)}{VERDICT}{o}." for o in options[i]]
    return replies


def continuation_text(processor, question: str, option: str) -> str:
    """The text the template appends to the generation prompt when the assistant replies `option`."""
    prompt = prompt_text(processor, [user_turn(question)])
    full = processor.apply_chat_template([user_turn(question), {"role": "assistant", "content": option}],
                                         tokenize=False)
    if not full.startswith(prompt) or len(full) == len(prompt):
        raise ValueError("chat template does not render an assistant reply after its generation prompt")
    return full[len(prompt):]


@torch.inference_mode()
def option_logprobs(model, processor, images: list[Image.Image], questions: list[str],
                    options: list[list[str]], batch_size: int = 16, reduce: str = "sum") -> list[list[float]]:
    """Per question, each option's summed (or mean per token) log-probability given image + question.

    An option is the assistant's whole reply: pass `scored_replies(...)` to score trained replies.
    """
    if not len(images) == len(questions) == len(options):
        raise ValueError(f"{len(images)} images, {len(questions)} questions, {len(options)} option lists")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    tok = processor.tokenizer
    prefixes, pixels, pairs = [], [], []
    for i, (im, q, opts) in enumerate(zip(images, questions, options)):
        if not opts:
            raise ValueError(f"question {i} has no options to score")
        enc = encode_prompts(processor, [im.convert("RGB")], [prompt_text(processor, [user_turn(q)])],
                             return_tensors="pt")
        prefixes.append(enc["input_ids"][0])
        pixels.append(enc["pixel_values"][0])
        for opt in opts:
            cont = tok(continuation_text(processor, q, opt), add_special_tokens=False)["input_ids"]
            pairs.append((i, torch.tensor(cont, dtype=torch.long)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    scores = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        seqs = [torch.cat([prefixes[i], cont]) for i, cont in chunk]
        width, keep = max(len(s) for s in seqs), max(len(c) for _, c in chunk) + 1
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):], mask[r, width - len(s):] = s, 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        pix = torch.stack([pixels[i] for i, _ in chunk]).to(model.device, model.dtype)
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                       position_ids=positions.to(model.device), pixel_values=pix, logits_to_keep=keep).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position t predicts token t+1
        for r, (_, cont) in enumerate(chunk):
            n = len(cont)
            tok_lp = logp[r, keep - 1 - n:].gather(-1, cont.to(logp.device)[:, None]).squeeze(-1)
            scores.append(float(tok_lp.sum() / (n if reduce == "mean" else 1)))
    out, k = [], 0
    for opts in options:
        out.append(scores[k:k + len(opts)])
        k += len(opts)
    return out


def option_probs(model, processor, images, questions, options, batch_size: int = 16,
                 reduce: str = "sum") -> list[list[float]]:
    """Option log-likelihoods normalised into a probability distribution per question."""
    logps = option_logprobs(model, processor, images, questions, options, batch_size, reduce)
    return [torch.softmax(torch.tensor(lp, dtype=torch.float64), 0).tolist() for lp in logps]
