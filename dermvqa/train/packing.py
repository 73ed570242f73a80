"""Padding-free batches: examples packed into rows of at most `capacity` tokens, positions restarting at 0.

transformers 5 sees `position_ids` restart without an attention mask and builds a block-diagonal
causal mask (masking_utils.find_packed_sequence_indices), so no token attends across examples.
That detection is skipped when a KV cache exists, so the batch carries `use_cache=False`: without
it the examples of a row would silently attend to each other. Rows are filled first-fit longest
first and are only as long as the longest row: one long row would make sdpa's masked attention
cost grow with the square of the whole batch, rows near max_length keep it near per-example cost.
The few tokens that even out row lengths form their own segment with no labels. The first label
of each example is ignored so the previous example's last token is never trained to predict it.
Images follow the examples' order in the rows, the order LLaVA scatters their features in.

Flash attention builds no mask: transformers finds packed examples from `position_ids` only when the
batch is a single row (modeling_flash_attention_utils._is_packed_sequence), and otherwise runs plain
causal attention over each whole row. Under any flash implementation the collator therefore emits
one flat row of all examples in batch order (no filler), whose restarts give flash's varlen kernel the
exact example boundaries. An attention kind with neither a transformers mask function nor flash's
detection is refused.
"""
from __future__ import annotations

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.utils.generic import is_flash_attention_requested

IGNORE_INDEX = -100


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows of total length <= capacity, longest first (first-fit decreasing)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > capacity:
            raise ValueError(f"example of {lengths[i]} tokens does not fit a packed row of {capacity}")
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([])
            room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= lengths[i]
    return rows


def needs_flat_row(attn_implementation: str | None) -> bool:
    """True for flash kinds (packing seen in one-row batches only), False where a mask keeps rows apart."""
    if is_flash_attention_requested(requested_attention_implementation=attn_implementation):
        return True
    if attn_implementation in ALL_MASK_ATTENTION_FUNCTIONS:
        return False
    raise ValueError(f"attn_implementation {attn_implementation!r} cannot train packed batches: it is not a flash "
                     f"kind and transformers has no mask function for it, so packed examples would attend to each "
                     f"other; use one of {sorted(ALL_MASK_ATTENTION_FUNCTIONS.keys())} or set train.packing=false")


class PackingCollator:
    """Examples {input_ids, labels, pixel_values} -> packed rows (input_ids, labels, position_ids) + images.

    `attn_implementation` is the language model's (config.get_text_config()._attn_implementation).
    """

    def __init__(self, capacity: int, pad_token_id: int = 0, attn_implementation: str | None = "sdpa"):
        self.capacity, self.pad_token_id = capacity, pad_token_id
        self.flat = needs_flat_row(attn_implementation)

    def __call__(self, examples: list[dict]) -> dict:
        for e in examples:
            if not e["input_ids"] or len(e["labels"]) != len(e["input_ids"]):
                raise ValueError(f"example with {len(e['input_ids'])} input ids and {len(e['labels'])} labels "
                                 f"cannot be packed")
        rows = first_fit([len(e["input_ids"]) for e in examples], self.capacity)
        if self.flat:  # one row, in the batch's order
            rows = [sorted(i for row in rows for i in row)]
        width = max(sum(len(examples[i]["input_ids"]) for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = len(examples[i]["input_ids"])
                ids[r, at:at + n] = torch.as_tensor(examples[i]["input_ids"])
                labels[r, at + 1:at + n] = torch.as_tensor(examples[i]["labels"][1:])
                positions[r, at:at + n] = torch.arange(n)
                at += n
            positions[r, at:] = torch.arange(width - at)  # filler segment, attends only to itself
        batch = {"input_ids": ids, "labels": labels, "position_ids": positions, "use_cache": False}
        if "pixel_values" in examples[0]:
            batch["pixel_values"] = torch.stack([examples[i]["pixel_values"] for row in rows for i in row])
        return batch
