"""Padding-free batches: every example of a batch concatenated into one row, positions restarting at 0.

transformers 5 sees `position_ids` restart without an attention mask and builds a block-diagonal
causal mask (masking_utils.find_packed_sequence_indices), so no token attends across examples and
no compute is spent on padding. That detection is skipped when a KV cache exists, so the batch
carries `use_cache=False`: without it the examples of a row would silently attend to each other.
The first label of each example is ignored so the previous example's last token is never trained
to predict it. Images stay in example order, which is the
order LLaVA scatters their features into the `<image>` positions.
"""
from __future__ import annotations

import torch

IGNORE_INDEX = -100


class PackingCollator:
    """Examples {input_ids, labels, pixel_values} -> one packed row + stacked images."""

    def __call__(self, examples: list[dict]) -> dict:
        ids, labels, positions = [], [], []
        for e in examples:
            n = len(e["input_ids"])
            if n == 0 or len(e["labels"]) != n:
                raise ValueError(f"example with {n} input ids and {len(e['labels'])} labels cannot be packed")
            ids.append(torch.as_tensor(e["input_ids"], dtype=torch.long))
            lab = torch.as_tensor(e["labels"], dtype=torch.long).clone()
            lab[0] = IGNORE_INDEX
            labels.append(lab)
            positions.append(torch.arange(n, dtype=torch.long))
        batch = {"input_ids": torch.cat(ids)[None], "labels": torch.cat(labels)[None],
                 "position_ids": torch.cat(positions)[None], "use_cache": False}
        if "pixel_values" in examples[0]:
            batch["pixel_values"] = torch.stack([e["pixel_values"] for e in examples])
        return batch


def real_tokens(batch: dict) -> int:
    """Non-padding tokens in a padded (attention_mask) or packed (no mask) batch."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()
