"""train.attn_implementation and train.liger: packed-row loss and gradients as with sdpa and no Liger.

torch's FlexAttention has no backward pass on the CPU (torch 2.14: "FlexAttention does not support
backward on CPU") and Liger's kernels are Triton, so on the CPU these tests check the forward loss
under flex_attention, that flex training and liger=true are refused with one clear line, that
liger=auto changes nothing, and that liger's patch (applied without running it) swaps exactly
RMSNorm, SwiGLU and RoPE. The CUDA tests compare loss and every gradient; scripts/gpu_check.sh runs them.
"""
import sys

import pytest
import torch
from transformers import LlavaForConditionalGeneration
from transformers.models.qwen2 import modeling_qwen2

from dermvqa.train.kernels import apply_liger, set_llm_attention, use_kernels
from dermvqa.train.packing import PackingCollator
from dermvqa.train.step import label_only_loss
from tests.train.test_step import _examples

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CAPACITY = 150  # two rows of packed examples plus filler: the block-diagonal mask matters


@pytest.fixture()
def model(tiny_model_dir):
    torch.manual_seed(0)
    return LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).to(DEVICE).eval()


@pytest.fixture()
def modeling_names():
    """Liger patches the modeling module's names (RoPE, classes); each test gets them back."""
    saved = dict(vars(modeling_qwen2))
    yield saved
    for name, value in saved.items():
        setattr(modeling_qwen2, name, value)


def _batch(model, examples):
    kind = model.config.get_text_config()._attn_implementation
    batch = PackingCollator(CAPACITY, attn_implementation=kind)(examples)
    assert batch["input_ids"].shape[0] == 2
    return {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in batch.items()}


def _loss_and_grads(model, examples):
    model.zero_grad()
    loss, _ = label_only_loss(model, _batch(model, examples))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _instance_patches(model):
    return [n for n, m in model.named_modules() if "forward" in vars(m) or "_get_name" in vars(m)]


def test_flex_packed_loss_equals_sdpa_forward(model):
    examples = _examples(model, (5, 9, 3))
    with torch.no_grad():
        ref, _ = label_only_loss(model, _batch(model, examples))
        model.set_attn_implementation({"text_config": "flex_attention"})  # set_llm_attention refuses on the CPU
        flex, _ = label_only_loss(model, _batch(model, examples))
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert abs(flex.item() - ref.item()) < 1e-5, (flex.item(), ref.item())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_flex_training_is_refused_on_cpu_in_one_line(model):
    with pytest.raises(ValueError, match="flex_attention needs a GPU: no CUDA GPU.*use sdpa") as err:
        use_kernels(model, {"attn_implementation": "flex_attention", "liger": False})
    assert "\n" not in str(err.value)


def test_attention_setting_reaches_the_llm_only(model):
    set_llm_attention(model, "eager")
    assert model.config.get_text_config()._attn_implementation == "eager"
    assert model.model.language_model.layers[0].self_attn.config._attn_implementation == "eager"
    assert model.config.vision_config._attn_implementation == "sdpa"


def test_liger_auto_on_cpu_changes_nothing(model, modeling_names):
    if torch.cuda.is_available():
        pytest.skip("auto applies Liger where CUDA is present")
    examples = _examples(model, (5, 9, 3))
    loss, grads = _loss_and_grads(model, examples)
    use_kernels(model, {"attn_implementation": "sdpa", "liger": "auto"})
    assert _instance_patches(model) == [] and dict(vars(modeling_qwen2)) == modeling_names
    loss2, grads2 = _loss_and_grads(model, examples)
    assert loss2 == loss and all(torch.equal(grads[n], grads2[n]) for n in grads)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_liger_true_without_cuda_is_one_clear_line(model):
    with pytest.raises(RuntimeError, match=r"train.liger=true cannot run here: no CUDA GPU.*auto or false") as err:
        apply_liger(model, True)
    assert "\n" not in str(err.value) and _instance_patches(model) == []
    with pytest.raises(ValueError, match="must be auto, true or false"):
        apply_liger(model, "yes")


def test_liger_true_without_the_package_is_one_clear_line(model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in [n for n in sys.modules if n.startswith("liger_kernel.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # import fails as where it is not installed
    assert apply_liger(model, "auto") is False and _instance_patches(model) == []
    with pytest.raises(RuntimeError, match="liger-kernel is not importable.*pip install liger-kernel") as err:
        apply_liger(model, True)
    assert "\n" not in str(err.value)


def test_liger_patches_only_norms_swiglu_and_rope(model, modeling_names, monkeypatch):
    pytest.importorskip("liger_kernel.transformers.monkey_patch")
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # patch only; Triton never runs here
    assert apply_liger(model, "auto") is True
    llm = model.model.language_model
    patched = {n: m._get_name() for n, m in model.named_modules() if "_get_name" in vars(m)}
    layers = len(llm.layers)
    assert sorted(set(patched.values())) == ["LigerRMSNorm", "LigerSwiGLUMLP"]
    assert sum(v == "LigerRMSNorm" for v in patched.values()) == 2 * layers + 1
    assert sum(v == "LigerSwiGLUMLP" for v in patched.values()) == layers
    assert all(n.startswith("model.language_model.") for n in patched)  # not the tower, projector or lm_head
    assert "forward" not in vars(model) and "forward" not in vars(llm)  # no fused linear cross-entropy
    assert modeling_qwen2.apply_rotary_pos_emb is liger_rotary_pos_emb
    changed = {k for k, v in modeling_names.items() if vars(modeling_qwen2)[k] is not v}
    assert changed == {"apply_rotary_pos_emb", "Qwen2RMSNorm", "Qwen2MLP"}


def _same_training_after(switch, name: str, model) -> None:
    """Loss and every gradient of the same packed batch before and after `switch(model)`."""
    examples = _examples(model, (5, 9, 3))
    ref, ref_grads = _loss_and_grads(model, examples)
    switch(model)
    got, grads = _loss_and_grads(model, examples)
    worst = max((grads[n] - g).abs().max().item() for n, g in ref_grads.items())
    print(f"{name}: loss {got:.6f} vs {ref:.6f}, largest gradient difference {worst:.2e}")
    assert grads.keys() == ref_grads.keys() and abs(got - ref) < 1e-5
    for n, g in ref_grads.items():
        torch.testing.assert_close(grads[n], g, rtol=1e-4, atol=1e-5, msg=n)


def test_the_gpu_comparison_itself_runs_here_with_eager_attention(model, capsys):
    _same_training_after(lambda m: set_llm_attention(m, "eager"), "eager vs sdpa", model)
    assert "eager vs sdpa: loss" in capsys.readouterr().out


@cuda
def test_flex_loss_and_gradients_equal_sdpa_on_gpu(model):
    _same_training_after(lambda m: set_llm_attention(m, "flex_attention"), "flex_attention vs sdpa", model)


@cuda
def test_liger_loss_and_gradients_equal_plain_on_gpu(model, modeling_names):
    def liger(m):
        assert apply_liger(m, True) is True

    _same_training_after(liger, "liger vs plain", model)
