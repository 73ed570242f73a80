"""Our training step on a tiny LLaVA: packed rows + label-only loss equal the padded full-logit loss."""
import pytest
import torch
from transformers import LlavaForConditionalGeneration

from dermvqa.data.collator import PaddingCollator
from dermvqa.train.packing import PackingCollator, first_fit
from dermvqa.train.step import keep_lora_inputs_in_compute_dtype, label_only_loss, set_checkpointing
from dermvqa.train.tuning import apply_lora, lora_targets


@pytest.fixture()
def model(tiny_model_dir):
    torch.manual_seed(0)
    return LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).train()


def _examples(model, lengths=(5, 9, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    image_id, n_image = model.config.image_token_id, model.config.image_seq_length
    size = model.config.vision_config.image_size
    out = []
    for n in lengths:
        ids = [5] + [image_id] * n_image + torch.randint(10, 300, (n,), generator=g).tolist()
        answer = max(1, n // 2)
        labels = [-100] * (len(ids) - answer) + ids[-answer:]
        out.append({"input_ids": ids, "labels": labels, "pixel_values": torch.randn(3, size, size, generator=g)})
    return out


@pytest.mark.parametrize("capacity", [1000, 150])  # one row, or rows of several examples plus filler
def test_packed_label_only_loss_and_grads_match_padded(model, capacity):
    model.train(False)  # no dropout: the two paths must agree exactly
    examples = _examples(model)
    padded = PaddingCollator(0)(examples)
    packed = PackingCollator(capacity)(examples)
    assert packed["input_ids"].shape[0] == (1 if capacity == 1000 else 2)
    assert "attention_mask" not in packed and packed["use_cache"] is False
    ref = model(**padded).loss
    ref.backward()
    ref_grad = model.model.multi_modal_projector.linear_1.weight.grad.clone()
    model.zero_grad()
    ours, n = label_only_loss(model, packed)
    ours.backward()
    assert n == sum(max(1, k // 2) for k in (5, 9, 3))
    assert abs(ours.item() - ref.item()) < 1e-5
    assert torch.allclose(model.model.multi_modal_projector.linear_1.weight.grad, ref_grad, atol=1e-6)
    assert abs(label_only_loss(model, padded)[0].item() - ref.item()) < 1e-5
    # with a Trainer-style token count the loss is a sum over this batch divided by that count
    assert abs(label_only_loss(model, packed, num_items_in_batch=2 * n)[0].item() - ref.item() / 2) < 1e-5


def _logits(model, examples, use_cache=False):
    batch = PackingCollator(1000)(examples)
    batch.pop("labels")
    with torch.no_grad():
        return model(**{**batch, "use_cache": use_cache}).logits[0]


def test_packed_examples_do_not_see_each_other(model):
    model.train(False)
    b, a = _examples(model, (3, 9))  # rows are filled longest first: a, then b
    a2 = dict(a, input_ids=a["input_ids"][:-3] + [11, 12, 13], pixel_values=a["pixel_values"] + 1)
    n = len(a["input_ids"])
    with_a, with_a2, solo = _logits(model, [a, b])[n:], _logits(model, [a2, b])[n:], _logits(model, [b])
    assert not torch.allclose(_logits(model, [a])[-1], _logits(model, [a2])[-1], atol=1e-3)  # a2 really differs
    assert torch.allclose(with_a, with_a2, atol=1e-5) and torch.allclose(with_a, solo, atol=1e-5)
    # the trap the collator's use_cache=False closes: with a cache the mask is plain causal across examples
    assert not torch.allclose(_logits(model, [a, b], use_cache=True)[n:], solo, atol=1e-3)


def test_lora_targets_only_llm_linears_and_projector_trains(model):
    names = lora_targets(model)
    assert names and all(n.startswith("model.language_model.") for n in names)
    assert not any("lm_head" in n or "vision_tower" in n or "projector" in n for n in names)
    some = lora_targets(model, ["q_proj", "v_proj"])
    assert some and all(n.endswith(("q_proj", "v_proj")) for n in some) and len(some) < len(names)
    with pytest.raises(ValueError, match="no Linear layer"):
        lora_targets(model, ["nope_proj"])
    pm = apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert sum("lora_A" in n for n in trainable) == len(names) and any("multi_modal_projector" in n for n in trainable)
    assert not any("vision_tower" in n or "embed_tokens" in n for n in trainable)


def test_selective_checkpointing_and_bf16_autocast_step(model):
    pm = apply_lora(model, r=4, alpha=8, dropout=0.05)
    layers = list(pm.get_base_model().model.language_model.layers)
    assert set_checkpointing(pm, 0.5) == 1 and [layer.gradient_checkpointing for layer in layers] == [True, False]
    tower = pm.get_base_model().model.vision_tower
    assert not any(getattr(m, "gradient_checkpointing", False) for m in tower.modules())
    assert set_checkpointing(pm, 0.0) == 0 and not any(layer.gradient_checkpointing for layer in layers)
    set_checkpointing(pm, 1.0)
    assert keep_lora_inputs_in_compute_dtype(pm) > 0
    batch = PackingCollator(1000)(_examples(model))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = label_only_loss(pm, batch)
    loss.backward()
    lora_a = next(p for n, p in pm.named_parameters() if "lora_B" in n)
    assert lora_a.dtype == torch.float32 and lora_a.grad is not None and torch.isfinite(loss)
    with pytest.raises(ValueError, match="fraction"):
        set_checkpointing(pm, 1.5)


def test_first_fit_rows():
    assert first_fit([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    assert sorted(i for row in first_fit([7] * 5, 7) for i in row) == list(range(5))
    with pytest.raises(ValueError, match="does not fit"):
        first_fit([9], 8)
