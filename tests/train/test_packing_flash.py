"""Packing under flash attention: transformers' own packed-sequence detection sees our batches' example boundaries.

Flash builds no mask; modeling_flash_attention_utils finds packed examples from position_ids, in one-row
batches only. A CPU stand-in put in place of the flash_attention_2 kernel does what flash_attention_forward
does with that detection (the model keeps transformers' own flash mask path), so the leak of a multi-row
batch and its absence in our flat row show without a GPU.
"""
import pytest
import torch
import torch.nn.functional as F
from transformers import LlavaForConditionalGeneration
from transformers.masking_utils import find_packed_sequence_indices
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.modeling_flash_attention_utils import _is_packed_sequence, prepare_fa_kwargs_from_position_ids
from transformers.models.qwen2.modeling_qwen2 import repeat_kv

from dermvqa.data.collator import PaddingCollator
from dermvqa.train.packing import IGNORE_INDEX, PackingCollator
from dermvqa.train.step import label_only_loss
from tests.train.test_step import _examples

LENGTHS = (7, 5, 4, 3)
EXAMPLES = [{"input_ids": list(range(10 * n, 11 * n)), "labels": list(range(10 * n, 11 * n))} for n in LENGTHS]


def cpu_flash(module, query, key, value, attention_mask, dropout=0.0, scaling=None, position_ids=None, **kwargs):
    """flash_attention_forward without a mask: varlen over the segments transformers detects, else whole rows."""
    assert attention_mask is None and dropout == 0.0
    bounds = [0, query.shape[2]]
    if _is_packed_sequence(position_ids, query.shape[0]):
        (cu_seqlens, _), _ = prepare_fa_kwargs_from_position_ids(position_ids)
        bounds = cu_seqlens.tolist()
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out = torch.cat([F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                                                    is_causal=module.is_causal, scale=scaling)
                     for a, b in zip(bounds, bounds[1:])], dim=2)
    return out.transpose(1, 2).contiguous(), None


@pytest.mark.parametrize("impl", ["sdpa", "eager", "flex_attention"])
def test_masked_kinds_keep_rows_and_transformers_finds_segments_per_row(impl):
    batch = PackingCollator(10, attn_implementation=impl)(EXAMPLES)
    positions = batch["position_ids"]
    assert positions.shape == (2, 10)  # rows [7, 3] and [5, 4 + 1 filler]
    assert find_packed_sequence_indices(positions).tolist() == [[0] * 7 + [1] * 3, [0] * 5 + [1] * 4 + [2]]
    # what flash would make of the same batch: no packing seen, plain causal attention across each whole row
    assert not _is_packed_sequence(positions, batch_size=2)


@pytest.mark.parametrize("impl", ["flash_attention_2", "flash_attention_3", "kernels-community/flash-attn2"])
def test_flash_kinds_get_one_flat_row_whose_segments_flash_recovers_exactly(impl):
    batch = PackingCollator(10, attn_implementation=impl)(EXAMPLES)
    ids, labels, positions = batch["input_ids"], batch["labels"], batch["position_ids"]
    assert ids.shape == labels.shape == positions.shape == (1, sum(LENGTHS))  # no filler in a flat row
    assert _is_packed_sequence(positions, batch_size=1)
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(positions)
    assert cu_q.tolist() == cu_k.tolist() == [0, 7, 12, 16, 19] and max_q == max_k == 7
    segments = [ids[0, a:b].tolist() for a, b in zip(cu_q.tolist(), cu_q.tolist()[1:])]
    assert segments == [e["input_ids"] for e in EXAMPLES]
    for a, b in zip(cu_q.tolist(), cu_q.tolist()[1:]):  # each example's first label stays unlearned
        assert labels[0, a] == IGNORE_INDEX and labels[0, a + 1:b].tolist() == ids[0, a + 1:b].tolist()


def test_a_flat_row_still_refuses_an_example_longer_than_max_length():
    with pytest.raises(ValueError, match="example of 7 tokens does not fit a packed row of 6"):
        PackingCollator(6, attn_implementation="flash_attention_2")(EXAMPLES)


@pytest.mark.parametrize("impl", ["kernels-community/metal-sdpa", None])
def test_an_implementation_without_mask_or_flash_detection_is_refused(impl):
    with pytest.raises(ValueError, match=r"cannot train packed batches.*set train.packing=false"):
        PackingCollator(10, attn_implementation=impl)


def test_flat_row_under_flash_gives_the_padded_loss_and_a_multi_row_batch_leaks(tiny_model_dir, monkeypatch):
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    examples = _examples(model, (5, 9, 3))
    reference = model(**PaddingCollator(0)(examples)).loss.item()  # sdpa, one padded row per example
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", cpu_flash)
    model.config.get_text_config()._attn_implementation = "flash_attention_2"  # the LLM only; the tower stays sdpa
    impl = model.config.get_text_config()._attn_implementation  # what run_training hands the collator
    assert model.model.language_model.config._attn_implementation == impl == "flash_attention_2"
    with torch.no_grad():
        flat = PackingCollator(150, attn_implementation=impl)(examples)
        assert flat["input_ids"].shape[0] == 1
        assert abs(label_only_loss(model, flat)[0].item() - reference) < 1e-5
        rows = PackingCollator(150)(examples)  # the sdpa layout, two examples in one of its two rows
        assert rows["input_ids"].shape[0] == 2
        assert abs(label_only_loss(model, rows)[0].item() - reference) > 1e-3
