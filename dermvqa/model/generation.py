"""The decoding settings a dermvqa model folder carries: greedy, with the LLM family's stop ids.

An instruct LLM's own generation_config usually samples (Qwen2.5-7B-Instruct: temperature 0.7,
top_p 0.8, top_k 20, repetition_penalty 1.05). Copied into a LLaVA folder it would make plain
`generate()`, vLLM and SGLang sample from our exports, and the repetition penalty alone changes
answers that must repeat the question's words (a yes/no about a named diagnosis, an option's text).
"""
from __future__ import annotations

from transformers import GenerationConfig

# Used only when sampling (and max_length, which max_new_tokens replaces).
SAMPLING = {"temperature", "top_k", "top_p", "typical_p", "min_p", "epsilon_cutoff", "eta_cutoff", "max_length"}


def stop_ids(*configs, tokenizer=None) -> list[int]:
    """Every end-of-sequence id named by the given configs and the tokenizer, in first-seen order."""
    ids: list[int] = []
    for source in (*configs, tokenizer):
        eos = getattr(source, "eos_token_id", None)
        for i in eos if isinstance(eos, (list, tuple)) else [eos]:
            if i is not None and i not in ids:
                ids.append(int(i))
    return ids


def greedy_config(eos_token_id: list[int], pad_token_id: int | None, bos_token_id: int | None = None,
                  max_new_tokens: int | None = None) -> GenerationConfig:
    """Argmax decoding and nothing else: no sampling, beams, penalties or length tricks.

    Every knob that acts in greedy search is spelled out at its neutral value: `generate()` fills the
    unset (None) fields of a config it is given from the model's own config, so a field left unset
    would inherit a penalty. Sampling knobs stay unset (transformers refuses them without sampling),
    so a serving engine takes its temperature from the request.
    """
    neutral = {k: v for k, v in GenerationConfig._get_default_generation_params().items() if k not in SAMPLING}
    config = GenerationConfig(**{**neutral, "do_sample": False, "num_beams": 1, "eos_token_id": eos_token_id,
                                 "pad_token_id": pad_token_id, "bos_token_id": bos_token_id})
    if max_new_tokens is not None:
        config.max_new_tokens = max_new_tokens
    return config


def model_greedy_config(model, tokenizer, max_new_tokens: int | None = None) -> GenerationConfig:
    """A greedy config with the stop ids of `model`'s own generation config and `tokenizer`."""
    own = model.generation_config
    return greedy_config(stop_ids(own, tokenizer=tokenizer), tokenizer.pad_token_id, own.bos_token_id,
                         max_new_tokens)
